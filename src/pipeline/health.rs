//! What `/healthz` and `/readyz` report, and the watchdog that notices a processing loop that has
//! stopped moving: librdkafka calls block, and one that never returns (seen in
//! `send_offsets_to_transaction` after the group coordinator's broker died) would otherwise leave a
//! service that commits nothing while its health checks say "ok".
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shared by the processing loop, the watchdog and the HTTP server.
#[derive(Debug)]
pub struct Health {
    /// Partitions are assigned and restored.
    pub ready: AtomicBool,
    /// An owned partition has input waiting that is not being consumed.
    pub stalled: AtomicBool,
    /// The loop has not come round for longer than the watchdog allows.
    pub stuck: AtomicBool,
    started: Instant,
    /// When the loop last came round, in milliseconds since `started`.
    last_beat_ms: AtomicU64,
    /// Bounded waits of their own (a restore, committed offsets held by a dead instance) that the
    /// watchdog leaves alone; a count, since they nest.
    excused: AtomicU32,
    /// Input records in committed transactions since start: progress that a caller can wait for.
    committed_records: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            ready: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            stuck: AtomicBool::new(false),
            started: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            excused: AtomicU32::new(0),
            committed_records: AtomicU64::new(0),
        }
    }
}

impl Health {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
            && !self.stalled.load(Ordering::Relaxed)
            && self.is_live()
    }

    pub fn is_live(&self) -> bool {
        !self.stuck.load(Ordering::Relaxed)
    }

    /// A transaction with `records` input records committed.
    pub fn committed(&self, records: usize) {
        self.committed_records
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    pub fn committed_records(&self) -> u64 {
        self.committed_records.load(Ordering::Relaxed)
    }

    /// The loop came round.
    pub fn beat(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_beat_ms.store(now, Ordering::Relaxed);
    }

    /// Runs `wait`, a wait with a bound of its own, without the watchdog counting it.
    pub fn excused<T>(&self, wait: impl FnOnce() -> T) -> T {
        self.excused.fetch_add(1, Ordering::Relaxed);
        let result = wait();
        self.excused.fetch_sub(1, Ordering::Relaxed);
        self.beat();
        result
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_beat_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// What the watchdog makes of the loop's silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Moving,
    /// Silent past the timeout: health and readiness red.
    Stuck(Duration),
    /// Silent past twice the timeout: the process exits so that it is restarted.
    Dead(Duration),
}

pub fn judge(silent_for: Duration, excused: bool, timeout: Duration) -> Verdict {
    match silent_for {
        _ if excused => Verdict::Moving,
        s if s >= timeout * 2 => Verdict::Dead(s),
        s if s >= timeout => Verdict::Stuck(s),
        _ => Verdict::Moving,
    }
}

/// Starts the watchdog thread. A loop found dead ends the process with status 2: the thread that
/// would unwind it is the one that is stuck, and the broker aborts its open transaction. It also
/// exports readiness each second: the watchdog keeps running while the loop is stuck, so the gauge
/// turns 0 when it should (a gauge set by the loop itself would freeze at 1).
pub fn spawn_watchdog(health: Arc<Health>, timeout: Duration) -> std::io::Result<()> {
    health.beat();
    std::thread::Builder::new()
        .name("autoclaim-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            metrics::gauge!(crate::telemetry::READY).set(f64::from(u8::from(health.is_ready())));
            let excused = health.excused.load(Ordering::Relaxed) > 0;
            match judge(health.silent_for(), excused, timeout) {
                Verdict::Moving => {
                    if health.stuck.swap(false, Ordering::Relaxed) {
                        tracing::info!("processing loop moving again");
                    }
                }
                Verdict::Stuck(silent) => {
                    if !health.stuck.swap(true, Ordering::Relaxed) {
                        tracing::error!(
                            silent_s = silent.as_secs(),
                            "processing loop has not come round (blocked in a Kafka call?); /healthz and /readyz are red"
                        );
                    }
                }
                Verdict::Dead(silent) => {
                    tracing::error!(
                        silent_s = silent.as_secs(),
                        "processing loop still blocked; exiting so that the service is restarted"
                    );
                    eprintln!(
                        "autoclaim: the processing loop made no progress for {}s; exiting",
                        silent.as_secs()
                    );
                    std::process::exit(2);
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(60);

    #[test]
    fn silence_turns_health_red_then_ends_the_process() {
        assert_eq!(
            judge(Duration::from_secs(5), false, TIMEOUT),
            Verdict::Moving
        );
        assert_eq!(
            judge(Duration::from_secs(61), false, TIMEOUT),
            Verdict::Stuck(Duration::from_secs(61))
        );
        assert_eq!(
            judge(Duration::from_secs(120), false, TIMEOUT),
            Verdict::Dead(Duration::from_secs(120))
        );
    }

    #[test]
    fn an_excused_wait_is_never_judged() {
        assert_eq!(
            judge(Duration::from_secs(600), true, TIMEOUT),
            Verdict::Moving
        );
        let health = Health::default();
        health.excused(|| {
            assert_eq!(health.excused.load(Ordering::Relaxed), 1);
        });
        assert_eq!(health.excused.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn readiness_needs_assigned_partitions_no_stall_and_a_live_loop() {
        let health = Health::default();
        assert!(!health.is_ready(), "nothing assigned yet");
        health.ready.store(true, Ordering::Relaxed);
        assert!(health.is_ready());
        health.stuck.store(true, Ordering::Relaxed);
        assert!(!health.is_ready() && !health.is_live());
        health.stuck.store(false, Ordering::Relaxed);
        health.stalled.store(true, Ordering::Relaxed);
        assert!(!health.is_ready() && health.is_live());
    }
}
