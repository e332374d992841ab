//! `autoclaim-bench`: end-to-end figures of autoclaim against a real broker, in one run on the same
//! topic shapes.
//!
//! 1. **Load**: the tables and N activity events of a seeded, realistic workload (`Scenario`, many
//!    tenants) into fresh topics (every topic name of a run starts with its prefix).
//! 2. **Ceilings**, each a child process of this binary: a bare pass-through (a `read_committed`
//!    group member that copies each record, undecoded, to the same partition number of an output
//!    topic) without transactions, and the same with transactions cut like autoclaim's (same batch
//!    bounds, a commit also as soon as nothing more is waiting, `send_offsets_to_transaction`,
//!    outputs drained, `commit_transaction`), both copying every record.
//! 3. **`autoclaim run`**: the release binary as a child process on the same activity topic, timed
//!    from its readiness (partitions restored, first record next) to the moment its committed
//!    counters (`autoclaim_events_total` + `autoclaim_dead_letters_total`, polled every 20 ms) reach N.
//!    Then the **like-for-like** transactional pass-through, copying the share of records the run
//!    wrote (`--ceiling-output-share auto`), the ceiling the 80% target is measured against.
//! 4. **Latency**: a fresh activity topic, `run` started first, then events produced at a fixed rate;
//!    a `read_committed` consumer of the assignments and failures topics takes, for every output, the
//!    time it became visible minus the time its input event was handed to the producer (the event is
//!    found by the output's `triggerEventId`). The service's own bucketed histogram
//!    (`autoclaim_event_to_commit_seconds`, every event, until its commit returns) is printed next to it.
//!    Then the like-for-like transactional pass-through on topics of its own, at the same rate, its
//!    copies matched by the `eventId` they carry; both side by side.
//! 5. **Scale**: directories of U users (0 for the baseline), `run` started on them; restore time
//!    (metric and log line), RSS after restore, bytes per tracked user.
//! 6. **Instances**: 1, 2, 3 instances of `run` in one group on the loaded activity topic.
//!
//! CPU figures come from `/proc/<pid>/stat` (utime + stime, all threads) deltas over the measured
//! window; peak memory from `VmHWM` (reset with `/proc/self/clear_refs` before each in-process
//! ceiling). Each figure carries the load average at its end and the machine's busy share of its
//! window (from `/proc/stat`), because the machine may be shared.
//!
//! A binary of its own rather than a subcommand of `autoclaim`, so that the product carries none
//! of this; it starts the `autoclaim` binary built beside it (`--binary` for another).
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

mod args;
mod child;
mod cluster;
mod figures;
mod harness;
mod instances;
mod latency;
mod metrics_text;
mod pass_child;
mod pass_through;
mod procfs;
mod restore_share;
mod scale;
mod share;
mod summary;
mod throughput;

/// The allocator of `autoclaim` (its main.rs says why), so that the pass-through ceilings, which
/// run in this binary, allocate as the service they are compared with does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long the first contact with the cluster may take (an authentication or TLS failure stops it
/// at once), as for autoclaim's commands.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let args = args::BenchArgs::parse();
    // The figures are the output: the log says only what went wrong unless AUTOCLAIM_LOG asks for more.
    autoclaim::logging::init(false, "warn");
    match connect_and_run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "autoclaim-bench: {}",
                autoclaim::error_text::error_text(e.as_ref())
            );
            ExitCode::from(2)
        }
    }
}

/// Resolves the security flags and makes the first contact, as autoclaim's commands do, so that
/// settings that cannot work stop the run before it creates anything.
fn connect_and_run(mut args: args::BenchArgs) -> anyhow::Result<()> {
    args.kafka = std::mem::take(&mut args.kafka).resolve()?;
    autoclaim::pipeline::connect::check(&args.kafka, CONNECT_TIMEOUT)?;
    harness::command(args)
}
