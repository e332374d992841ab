//! The signals that ask a command to stop: Ctrl-C, and SIGTERM on Unix (what an orchestrator sends).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Resolves when the process is asked to stop.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}

/// A flag that turns true on the first stop signal, for code that runs on plain threads and polls
/// it. A thread of its own (named `thread_name`) waits for the signal.
pub fn stop_on_signal(thread_name: &str) -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || {
            runtime.block_on(shutdown_signal());
            flag.store(true, Ordering::Relaxed);
        })?;
    Ok(stop)
}
