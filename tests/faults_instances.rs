//! Faults among instances of one group, against a real broker (AUTOCLAIM_TEST_BROKERS):
//!
//! * three instances share the partitions; one is SIGKILLed mid-stream and never comes back; the
//!   two others take over its partitions (after its session times out) and nothing is lost or
//!   duplicated;
//! * a second instance started with the same transactional id fences the first, which exits
//!   cleanly (status 0, a "fenced" log line); the second goes on and nothing is lost.
//!
//! Each ends with `autoclaim verify` finding nothing wrong and the outputs equal to `replay`'s. The
//! activity is published while the instances run, in chunks; the workload is seeded
//! (AUTOCLAIM_FAULT_SEED).
mod kafka_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use autoclaim::wire::{pb, Format};
use kafka_support::*;

const DEFAULT_SEED: u64 = 4242;
/// Guards against a hang; not a performance threshold.
const GUARD: Duration = Duration::from_secs(600);

fn seed() -> u64 {
    std::env::var("AUTOCLAIM_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

fn workload(seed: u64, tenants: usize, events: usize, seats_per_user: f64) -> Workload {
    workload_of_users(seed, tenants, 30, events, seats_per_user)
}

/// A change of the partitions an instance owns, as its log says it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ownership {
    /// Newly assigned (each one restored), and what it owns after.
    Assigned {
        new: BTreeSet<i32>,
        owned: BTreeSet<i32>,
    },
    /// Revoked (or lost), and what it keeps.
    Revoked {
        gone: BTreeSet<i32>,
        kept: BTreeSet<i32>,
    },
}

impl Ownership {
    fn after(&self) -> &BTreeSet<i32> {
        match self {
            Ownership::Assigned { owned, .. } => owned,
            Ownership::Revoked { kept, .. } => kept,
        }
    }
}

/// The list a log field such as `owned=[0, 3]` holds.
fn list_field(line: &str, field: &str) -> Option<BTreeSet<i32>> {
    let list = line
        .split(&format!(" {field}=["))
        .nth(1)?
        .split(']')
        .next()?;
    Some(
        list.split(',')
            .filter_map(|p| p.trim().parse().ok())
            .collect(),
    )
}

/// Every change of ownership a service log shows, in order.
fn ownership_changes(log: &str) -> Vec<Ownership> {
    log.lines()
        .filter_map(|line| {
            if line.contains("partitions assigned and restored") {
                Some(Ownership::Assigned {
                    new: list_field(line, "partitions")?,
                    owned: list_field(line, "owned")?,
                })
            } else if line.contains("partitions revoked") {
                Some(Ownership::Revoked {
                    gone: list_field(line, "partitions")?,
                    kept: list_field(line, "kept")?,
                })
            } else {
                None
            }
        })
        .collect()
}

/// The partitions a service log says the instance owns now.
fn last_assigned(log: &str) -> Option<BTreeSet<i32>> {
    ownership_changes(log).last().map(|c| c.after().clone())
}

/// Sum of the group's committed offsets of some activity partitions, once they are stable.
fn committed_of(topics: &Topics, group: &str, partitions: &BTreeSet<i32>) -> i64 {
    let list: Vec<i32> = partitions.iter().copied().collect();
    stable_committed_sum(topics, group, &list)
}

/// Sum of the high watermarks of some activity partitions.
fn end_of(topics: &Topics, partitions: &BTreeSet<i32>) -> i64 {
    activity_watermarks(topics)
        .iter()
        .filter(|(p, _)| partitions.contains(p))
        .map(|(_, (_, high))| *high)
        .sum()
}

/// What every test here starts from: fresh topics, the seeded workload's tables published, and a
/// group name of its own.
struct Setup {
    started: Instant,
    seed: u64,
    topics: Topics,
    w: Workload,
    group: String,
}

fn set_up(
    name: &str,
    seed: u64,
    partitions: i32,
    tenants: usize,
    events: usize,
    seats: f64,
) -> Setup {
    let started = Instant::now();
    let topics = unique_topics(name);
    create_topics(&topics, partitions);
    let w = workload(seed, tenants, events, seats);
    publish(&topics, &w.tables, Format::Json);
    let group = format!("g-{}", topics.activity);
    Setup {
        started,
        seed,
        topics,
        w,
        group,
    }
}

/// Each service must still run, then stop cleanly on SIGTERM.
fn stop_all(services: &mut [(&str, &mut Service)]) {
    for (name, s) in services.iter_mut() {
        assert!(s.is_running(), "{name} exited; log:\n{}", s.log_text());
        assert!(
            s.stop().success(),
            "{name}: clean exit; log:\n{}",
            s.log_text()
        );
    }
}

/// Checks the outputs against replay, after the checker found nothing wrong.
#[test]
fn a_killed_instance_s_partitions_are_taken_over_without_loss_or_duplicate() {
    let Setup {
        started,
        seed,
        topics,
        w,
        group,
    } = set_up("takeover", seed(), 6, 60, 30_000, 0.2);
    let mut a = Service::start(&ServiceOptions::hour_delay(&topics, &group, "takeover-a"));
    let mut b = Service::start(&ServiceOptions::hour_delay(&topics, &group, "takeover-b"));
    let mut c = Service::start(&ServiceOptions::hour_delay(&topics, &group, "takeover-c"));
    let all: BTreeSet<i32> = (0..6).collect();
    wait_until("the three instances to share the partitions", GUARD, || {
        let parts: Vec<_> = [&a, &b, &c]
            .iter()
            .map(|s| last_assigned(&s.log_text()).unwrap_or_default())
            .collect();
        parts.iter().all(|p| !p.is_empty())
            && parts.iter().flatten().copied().collect::<BTreeSet<_>>() == all
            && parts.iter().map(BTreeSet::len).sum::<usize>() == 6
    });
    let b_partitions = last_assigned(&b.log_text()).unwrap();

    // The stream, in chunks of 1,000. Once b has committed some of its records, three chunks go
    // at once and b is SIGKILLed 200 ms later, in the middle of that work (a transaction open).
    let chunks: Vec<&[pb::ReplayRecord]> = w.activity.chunks(1000).collect();
    let mut killed_at = None;
    let mut i = 0;
    while i < chunks.len() {
        if i == 12 {
            wait_until("b to commit some of its records", GUARD, || {
                committed_of(&topics, &group, &b_partitions) > 0
            });
            let burst: Vec<pb::ReplayRecord> = chunks[i..i + 3].concat();
            publish(&topics, &burst, Format::Json);
            i += 3;
            std::thread::sleep(Duration::from_millis(200));
            assert!(b.is_running(), "b exited by itself; log:\n{}", b.log_text());
            b.kill();
            let b_committed = committed_of(&topics, &group, &b_partitions);
            let b_end = end_of(&topics, &b_partitions);
            killed_at = Some((
                activity_end_total(&topics),
                b_committed,
                b_end,
                started.elapsed(),
            ));
        } else {
            publish(&topics, chunks[i], Format::Json);
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until("a and c to take over b's partitions", GUARD, || {
        let pa = last_assigned(&a.log_text()).unwrap_or_default();
        let pc = last_assigned(&c.log_text()).unwrap_or_default();
        pa.union(&pc).copied().collect::<BTreeSet<_>>() == all
    });
    let taken_over = started.elapsed();
    wait_processed(&topics, &group, GUARD);
    let processed = started.elapsed();
    let report = wait_clean(&topics, &group, GUARD);
    let clean = started.elapsed();
    assert_equal_to_replay(&topics, &w.expected);
    stop_all(&mut [("a", &mut a), ("c", &mut c)]);
    let logs = [a.log_text(), b.log_text(), c.log_text()];
    assert!(
        logs.iter().all(|l| !l.contains("panicked")),
        "a service log shows a panic"
    );
    let assigned_lines: usize = logs
        .iter()
        .map(|l| l.matches("partitions assigned").count())
        .sum();
    let (published, b_committed, b_end, kill_time) = killed_at.unwrap();
    eprintln!(
        "takeover: FIGURES seed={seed} events={} partitions=6 instances=3 killed=b (owned {b_partitions:?}) \
         at {:.1}s when {published} records were published, {b_committed} of the {b_end} of its partitions committed; taken over by {:.1}s; \
         all committed by {:.1}s; verify clean by {:.1}s; partition_assignments={assigned_lines} \
         assignments={} failures={} duplicates=0 lost=0 elapsed={:.1}s",
        w.activity.len(),
        kill_time.as_secs_f64(),
        taken_over.as_secs_f64(),
        processed.as_secs_f64(),
        clean.as_secs_f64(),
        report.counts.assignments,
        report.counts.failures,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_second_instance_with_the_same_transactional_id_fences_the_first() {
    let Setup {
        started,
        seed,
        topics,
        w,
        group,
    } = set_up("fence", seed() + 1, 3, 30, 20_000, 0.2);
    let mut first = Service::start(&ServiceOptions::hour_delay(&topics, &group, "fence-1"));
    let chunks: Vec<&[pb::ReplayRecord]> = w.activity.chunks(500).collect();
    let mut second = None;
    for (i, chunk) in chunks.iter().enumerate() {
        publish(&topics, chunk, Format::Json);
        if i == 15 {
            let published = activity_end_total(&topics);
            wait_until(
                "the first instance to process part of the stream",
                GUARD,
                || committed_total(&topics, &group) >= published / 2,
            );
            assert!(first.is_running(), "log:\n{}", first.log_text());
            second = Some(Service::start(&ServiceOptions::hour_delay(
                &topics, &group, "fence-1",
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut second = second.unwrap();
    let status = first.wait(GUARD);
    let fenced_after = started.elapsed();
    // Nothing lost first, then how the first instance went.
    wait_processed_by(&mut second, &topics, &group, GUARD);
    let report = wait_clean(&topics, &group, GUARD);
    assert_equal_to_replay(&topics, &w.expected);
    let first_log = first.log_text();
    assert!(
        status.success(),
        "the fenced instance must exit with status 0, got {status}; log:\n{first_log}"
    );
    assert!(
        first_log.contains("fenced by a newer instance"),
        "the fenced instance must say it was fenced; log:\n{first_log}"
    );
    assert!(second.is_running(), "log:\n{}", second.log_text());
    assert!(
        second.stop().success(),
        "clean exit; log:\n{}",
        second.log_text()
    );
    assert!(!second.log_text().contains("panicked") && !first_log.contains("panicked"));
    eprintln!(
        "fence: FIGURES seed={seed} events={} partitions=3 first exited (status 0, fenced) by {:.1}s; \
         assignments={} failures={} duplicates=0 lost=0 elapsed={:.1}s",
        w.activity.len(),
        fenced_after.as_secs_f64(),
        report.counts.assignments,
        report.counts.failures,
        started.elapsed().as_secs_f64()
    );
}

/// A dead instance that is not restarted with its transactional id leaves its last transaction open
/// until the broker times it out (transaction.timeout.ms, 10 s, checked every 10 s). Meanwhile the
/// survivors take over and commit new assignments on its partitions; a replacement instance (a new
/// pod: a new transactional id) joining in that window makes every partition be restored again
/// from the assignments changelog. Those assignments must not be forgotten, and no record may be
/// decided twice.
#[test]
fn a_replacement_joining_while_a_dead_instance_s_transaction_is_open_forgets_nothing() {
    let Setup {
        started,
        seed,
        topics,
        w,
        group,
    } = set_up("replace", seed() + 2, 6, 40, 30_000, 0.6);
    let mut a = Service::start(&ServiceOptions::hour_delay(&topics, &group, "replace-a"));
    let mut b = Service::start(&ServiceOptions::hour_delay(&topics, &group, "replace-b"));
    let mut c = Service::start(&ServiceOptions::hour_delay(&topics, &group, "replace-c"));
    let all: BTreeSet<i32> = (0..6).collect();
    wait_until("the three instances to share the partitions", GUARD, || {
        let parts: Vec<_> = [&a, &b, &c]
            .iter()
            .map(|s| last_assigned(&s.log_text()).unwrap_or_default())
            .collect();
        parts.iter().all(|p| !p.is_empty()) && parts.iter().map(BTreeSet::len).sum::<usize>() == 6
    });
    let b_partitions = last_assigned(&b.log_text()).unwrap();
    let chunks: Vec<&[pb::ReplayRecord]> = w.activity.chunks(1000).collect();
    let mut d = None;
    let mut figures = Vec::new();
    let mut i = 0;
    while i < chunks.len() {
        if i == 6 {
            wait_until("b to commit some of its records", GUARD, || {
                committed_of(&topics, &group, &b_partitions) > 0
            });
            let burst: Vec<pb::ReplayRecord> = chunks[i..i + 3].concat();
            publish(&topics, &burst, Format::Json);
            i += 3;
            std::thread::sleep(Duration::from_millis(200));
            assert!(b.is_running(), "b exited by itself; log:\n{}", b.log_text());
            b.kill();
            figures.push(format!(
                "b killed at {:.1}s",
                started.elapsed().as_secs_f64()
            ));
            continue;
        }
        if i == 12 {
            // b's open transaction lasts until the broker aborts it (10 to 20 s after it began).
            wait_until("a and c to take over b's partitions", GUARD, || {
                let pa = last_assigned(&a.log_text()).unwrap_or_default();
                let pc = last_assigned(&c.log_text()).unwrap_or_default();
                pa.union(&pc).copied().collect::<BTreeSet<_>>() == all
            });
            figures.push(format!(
                "taken over by {:.1}s",
                started.elapsed().as_secs_f64()
            ));
        }
        if i == 18 {
            d = Some(Service::start(&ServiceOptions::hour_delay(
                &topics,
                &group,
                "replace-d",
            )));
            figures.push(format!(
                "d started at {:.1}s",
                started.elapsed().as_secs_f64()
            ));
        }
        publish(&topics, chunks[i], Format::Json);
        i += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut d = d.unwrap();
    wait_processed(&topics, &group, GUARD);
    let report = wait_clean(&topics, &group, GUARD);
    assert_equal_to_replay(&topics, &w.expected);
    stop_all(&mut [("a", &mut a), ("c", &mut c), ("d", &mut d)]);
    eprintln!(
        "replace: FIGURES seed={seed} events={} {} assignments={} failures={} elapsed={:.1}s",
        w.activity.len(),
        figures.join(", "),
        report.counts.assignments,
        report.counts.failures,
        started.elapsed().as_secs_f64()
    );
}

/// Holds the group's offsets of every activity partition in a transaction that is never ended, as a
/// producer that died between `send_offsets_to_transaction` and its commit does: until the broker
/// times it out, the group coordinator answers stable-offset fetches of those partitions with
/// UNSTABLE_OFFSET_COMMIT. Returns the producer (the transaction stays open while it lives).
fn open_offsets_transaction(
    topics: &Topics,
    group: &str,
    timeout_ms: u32,
) -> rdkafka::producer::BaseProducer {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, Producer};
    use rdkafka::{Offset, TopicPartitionList};
    // A member of the group, for the group metadata the offsets are sent with; it leaves at once.
    let member: BaseConsumer = autoclaim::pipeline::clients::activity_consumer(&kafka(), group)
        .create()
        .unwrap();
    member.subscribe(&[&topics.activity]).unwrap();
    let deadline = Instant::now() + GUARD;
    while member.assignment().unwrap().count() == 0 {
        assert!(Instant::now() < deadline, "the zombie member never joined");
        let _ = member.poll(Duration::from_millis(100));
    }
    let metadata = member.group_metadata().unwrap();
    let mut config = autoclaim::pipeline::clients::transactional_producer(
        &kafka(),
        "zombie-offsets",
        autoclaim::pipeline::clients::ProducerSettings::default(),
    );
    config.set("transaction.timeout.ms", timeout_ms.to_string());
    let producer: BaseProducer = config.create().unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    let mut offsets = TopicPartitionList::new();
    for p in 0..6 {
        offsets
            .add_partition_offset(&topics.activity, p, Offset::Offset(1))
            .unwrap();
    }
    producer
        .send_offsets_to_transaction(&offsets, &metadata, Duration::from_secs(30))
        .unwrap();
    member.unsubscribe();
    drop(member);
    producer
}

/// A group whose offsets are held by an open transaction (a dead instance's) must start from the
/// committed offsets once it ends, even when the group rebalances while its members wait for them.
/// librdkafka, left to fetch the offsets itself, applies the answer of a fetch that was in flight
/// across the rebalance, and for a partition still held that answer is "no offset": the partition
/// would start over from `auto.offset.reset` and its records would be decided twice.
#[test]
fn a_rebalance_while_offsets_are_held_by_an_open_transaction_starts_from_the_committed_offsets() {
    let Setup {
        started,
        seed,
        topics,
        w,
        group,
    } = set_up("unstable", seed() + 3, 6, 30, 6_000, 0.3);
    // First half processed and committed by one instance, which then stops cleanly.
    let (first, second) = w.activity.split_at(w.activity.len() / 2);
    publish(&topics, first, Format::Json);
    let mut a = Service::start(&ServiceOptions::hour_delay(&topics, &group, "unstable-a"));
    wait_processed_by(&mut a, &topics, &group, GUARD);
    assert!(a.stop().success(), "a: clean exit; log:\n{}", a.log_text());
    let committed_before = committed_total(&topics, &group);
    // The offsets are now held by a transaction nobody will end; the broker aborts it after 30 s.
    let zombie = open_offsets_transaction(&topics, &group, 30_000);
    let held_at = started.elapsed();
    publish(&topics, second, Format::Json);
    let mut b = Service::start(&ServiceOptions::hour_delay(&topics, &group, "unstable-b"));
    wait_until("b to wait for the held offsets", GUARD, || {
        b.log_text()
            .contains("waiting for stable committed offsets")
    });
    // c joining makes the group rebalance while b waits.
    assert!(
        !b.log_text().contains("partitions assigned"),
        "the hold ended before c could join; log:\n{}",
        b.log_text()
    );
    let mut c = Service::start(&ServiceOptions::hour_delay(&topics, &group, "unstable-c"));
    let rebalanced_at = started.elapsed();
    wait_processed(&topics, &group, GUARD);
    let report = wait_clean(&topics, &group, GUARD);
    assert_equal_to_replay(&topics, &w.expected);
    drop(zombie);
    stop_all(&mut [("b", &mut b), ("c", &mut c)]);
    eprintln!(
        "unstable: FIGURES seed={seed} events={} committed before the hold {committed_before}; \
         offsets held from {:.1}s; c joined at {:.1}s; assignments={} failures={} elapsed={:.1}s",
        w.activity.len(),
        held_at.as_secs_f64(),
        rebalanced_at.as_secs_f64(),
        report.counts.assignments,
        report.counts.failures,
        started.elapsed().as_secs_f64()
    );
}

/// When the offsets stay held longer than `--stable-offsets-timeout`, the service stops with an error
/// that names the partitions, having decided nothing; once the transaction ends, an instance
/// finishes the work with nothing lost or duplicated.
#[test]
fn offsets_held_past_the_stable_offsets_timeout_stop_the_service_with_a_clear_error() {
    let Setup {
        started,
        seed,
        topics,
        w,
        group,
    } = set_up("held", seed() + 4, 6, 20, 2_000, 0.3);
    let (first, second) = w.activity.split_at(w.activity.len() / 2);
    publish(&topics, first, Format::Json);
    let mut a = Service::start(&ServiceOptions::hour_delay(&topics, &group, "held-a"));
    wait_processed_by(&mut a, &topics, &group, GUARD);
    stop_all(&mut [("a", &mut a)]);
    let committed_before = committed_total(&topics, &group);
    let zombie = open_offsets_transaction(&topics, &group, 30_000);
    publish(&topics, second, Format::Json);
    let mut b = Service::start(&ServiceOptions {
        extra: vec!["--stable-offsets-timeout".into(), "3s".into()],
        ..ServiceOptions::hour_delay(&topics, &group, "held-b")
    });
    let status = b.wait(GUARD);
    let log = b.log_text();
    assert!(!status.success(), "b must fail; log:\n{log}");
    assert!(
        log.contains("were not stable within") && log.contains("partitions [0, 1, 2, 3, 4, 5]"),
        "b must say which offsets it waited for; log:\n{log}"
    );
    drop(zombie);
    let all: BTreeSet<i32> = (0..6).collect();
    assert_eq!(
        committed_of(&topics, &group, &all),
        committed_before,
        "b must not have committed anything"
    );
    let mut c = Service::start(&ServiceOptions::hour_delay(&topics, &group, "held-c"));
    wait_processed_by(&mut c, &topics, &group, GUARD);
    let report = wait_clean(&topics, &group, GUARD);
    assert_equal_to_replay(&topics, &w.expected);
    stop_all(&mut [("c", &mut c)]);
    eprintln!(
        "held: FIGURES seed={seed} events={} b stopped with status {status}; c finished by {:.1}s; \
         assignments={} failures={}",
        w.activity.len(),
        started.elapsed().as_secs_f64(),
        report.counts.assignments,
        report.counts.failures,
    );
}

/// What a log says after its first `skip` changes of ownership: (partitions restored, the set
/// owned at the end), and whether every change was incremental: nothing restored that the instance
/// already owned, nothing dropped but what was revoked.
fn changes_since(log: &str, skip: usize, owned_before: &BTreeSet<i32>) -> (usize, BTreeSet<i32>) {
    let mut owned = owned_before.clone();
    let mut restored = 0;
    for change in ownership_changes(log).into_iter().skip(skip) {
        match &change {
            Ownership::Assigned { new, owned: after } => {
                assert!(
                    new.is_disjoint(&owned),
                    "restored {new:?} while owning {owned:?}"
                );
                let expected: BTreeSet<i32> = owned.union(new).copied().collect();
                assert_eq!(after, &expected, "an assignment must add to what is owned");
                restored += new.len();
            }
            Ownership::Revoked { gone, kept } => {
                let expected: BTreeSet<i32> = owned.difference(gone).copied().collect();
                assert_eq!(kept, &expected, "a revocation must keep the rest");
            }
        }
        owned = change.after().clone();
    }
    (restored, owned)
}

/// A member of the group, as a log seen so far: how many changes it has logged and what it owns.
struct Member {
    name: String,
    service: Service,
    seen: usize,
    owned: BTreeSet<i32>,
}

impl Member {
    fn start(topics: &Topics, group: &str, name: &str) -> Member {
        Member {
            name: name.to_owned(),
            service: Service::start(&ServiceOptions::hour_delay(topics, group, name)),
            seen: 0,
            owned: BTreeSet::new(),
        }
    }

    /// Partitions restored since last asked, checking that every change was incremental.
    fn restored_since(&mut self) -> usize {
        let log = self.service.log_text();
        let (restored, owned) = changes_since(&log, self.seen, &self.owned);
        self.seen = ownership_changes(&log).len();
        self.owned = owned;
        restored
    }
}

/// Waits until the members own every partition once between them.
fn wait_balanced(what: &str, members: &[&Member], partitions: i32) {
    let all: BTreeSet<i32> = (0..partitions).collect();
    wait_until(what, GUARD, || {
        let owned: Vec<BTreeSet<i32>> = members
            .iter()
            .map(|m| last_assigned(&m.service.log_text()).unwrap_or_default())
            .collect();
        owned.iter().all(|o| !o.is_empty())
            && owned.iter().map(BTreeSet::len).sum::<usize>() == all.len()
            && owned.iter().flatten().copied().collect::<BTreeSet<_>>() == all
    });
}

/// A rolling restart of three instances on twelve partitions, then a fourth joining and leaving,
/// all while the stream flows: partitions that stay with an instance are never restored (each
/// instance's log shows only incremental changes), the partitions moved are the only ones
/// restored, and nothing is lost, duplicated or assigned past the seats (`verify`, replay).
#[test]
fn a_rolling_restart_and_a_member_joining_and_leaving_restore_only_what_moved() {
    let Setup {
        started,
        seed,
        topics,
        w,
        group,
    } = set_up("rolling", seed() + 5, 12, 60, 36_000, 0.3);
    let mut members: Vec<Member> = ["roll-a", "roll-b", "roll-c"]
        .iter()
        .map(|name| Member::start(&topics, &group, name))
        .collect();
    wait_balanced(
        "the three instances to share the partitions",
        &members.iter().collect::<Vec<_>>(),
        12,
    );
    let initial: usize = members.iter_mut().map(Member::restored_since).sum();
    let chunks: Vec<&[pb::ReplayRecord]> = w.activity.chunks(1000).collect();
    let mut figures = vec![format!("initial restores {initial}")];
    let mut joined: Option<Member> = None;
    for (i, chunk) in chunks.iter().enumerate() {
        publish(&topics, chunk, Format::Json);
        std::thread::sleep(Duration::from_millis(100));
        match i {
            // Each instance in turn: SIGTERM (it commits and leaves), then a new process with
            // the same transactional id, as a rolling deploy replaces a pod.
            4 | 10 | 16 => {
                let k = (i - 4) / 6;
                let name = members[k].name.clone();
                let before: usize = members.iter_mut().map(Member::restored_since).sum();
                let moved = members[k].owned.len();
                assert!(
                    members[k].service.stop().success(),
                    "{name}: clean exit; log:\n{}",
                    members[k].service.log_text()
                );
                members[k] = Member::start(&topics, &group, &name);
                wait_balanced(
                    &format!("the group to settle after {name} restarted"),
                    &members.iter().collect::<Vec<_>>(),
                    12,
                );
                let restored: usize = members.iter_mut().map(Member::restored_since).sum();
                figures.push(format!(
                    "{name} restarted: owned {moved}, restored {restored} (before: {before})"
                ));
                // Its partitions went to the others and (some of them) came back to it.
                assert!(
                    restored <= 2 * moved,
                    "restarting {name} (owning {moved}) restored {restored} partitions"
                );
            }
            22 => {
                for m in &mut members {
                    m.restored_since();
                }
                let d = Member::start(&topics, &group, "roll-d");
                let mut all: Vec<&Member> = members.iter().collect();
                all.push(&d);
                wait_balanced("d to join", &all, 12);
                joined = Some(d);
            }
            28 => {
                let mut d = joined.take().expect("d joined");
                let gained = d.restored_since();
                let kept_restored: usize = members.iter_mut().map(Member::restored_since).sum();
                assert_eq!(kept_restored, 0, "d joining must restore nothing elsewhere");
                assert_eq!(gained, d.owned.len());
                assert!(d.service.stop().success(), "d: clean exit");
                wait_balanced(
                    "the group to settle after d left",
                    &members.iter().collect::<Vec<_>>(),
                    12,
                );
                let taken_back: usize = members.iter_mut().map(Member::restored_since).sum();
                assert_eq!(
                    taken_back, gained,
                    "d leaving must restore exactly its {gained} partitions"
                );
                figures.push(format!(
                    "d joined and took {gained} (others restored 0), left: others restored {taken_back}; {} partitions never restored",
                    12 - gained
                ));
            }
            _ => {}
        }
    }
    wait_processed(&topics, &group, GUARD);
    let report = wait_clean(&topics, &group, GUARD);
    assert_equal_to_replay(&topics, &w.expected);
    for m in &mut members {
        m.restored_since();
    }
    let logs: Vec<String> = members.iter().map(|m| m.service.log_text()).collect();
    assert!(logs.iter().all(|l| !l.contains("panicked")));
    let mut stopping: Vec<(&str, &mut Service)> = members
        .iter_mut()
        .map(|m| (m.name.as_str(), &mut m.service))
        .collect();
    stop_all(&mut stopping);
    eprintln!(
        "rolling: FIGURES seed={seed} events={} partitions=12 instances=3(+1) {} assignments={} failures={} duplicates=0 lost=0 elapsed={:.1}s",
        w.activity.len(),
        figures.join("; "),
        report.counts.assignments,
        report.counts.failures,
        started.elapsed().as_secs_f64()
    );
}

/// Members that rebalance eagerly (an autoclaim before incremental rebalancing, here a plain
/// consumer with the range assignor) cannot share a group with this version: it stops with an
/// error that says what to do, rather than retry for ever.
#[test]
fn an_instance_refuses_a_group_with_eager_members_and_says_why() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let Setup { topics, group, .. } = set_up("eager", seed() + 6, 3, 5, 100, 0.3);
    let mut config = autoclaim::pipeline::clients::activity_consumer(&kafka(), &group);
    config.set("partition.assignment.strategy", "range");
    let eager: BaseConsumer = config.create().unwrap();
    eager.subscribe(&[&topics.activity]).unwrap();
    let deadline = Instant::now() + GUARD;
    while eager.assignment().unwrap().count() == 0 {
        assert!(Instant::now() < deadline, "the eager member never joined");
        let _ = eager.poll(Duration::from_millis(100));
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // The eager member stays in the group while the instance tries to join.
        scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = eager.poll(Duration::from_millis(100));
            }
        });
        let mut service = Service::start(&ServiceOptions::hour_delay(&topics, &group, "eager-new"));
        let status = service.wait(GUARD);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let log = service.log_text();
        assert!(!status.success(), "the instance must stop; log:\n{log}");
        assert!(
            log.contains("rebalance eagerly") && log.contains(&group),
            "the error must name the group and the cause; log:\n{log}"
        );
    });
}

/// Transactions committed with records, in a log, between the last "restoring newly assigned"
/// line and the "partitions assigned and restored" line after it. The loop logs all three, so their
/// order in the log is the order they happened in.
fn commits_during_last_restore(log: &str) -> Option<usize> {
    let tail = log.rsplit("restoring newly assigned").next()?;
    let (during, _) = tail.split_once("partitions assigned and restored")?;
    Some(
        during
            .lines()
            .filter(|l| l.contains("transaction committed") && !l.contains(" records=0"))
            .count(),
    )
}

/// An instance that keeps partitions through a rebalance and gains others goes on processing the
/// ones it keeps while it restores the new ones (paused until their state is in place): with a
/// directory large enough for the restore to take a while, it commits records between the start
/// and the end of that restore, as its log shows. Nothing is lost or duplicated.
#[test]
fn partitions_kept_through_a_rebalance_go_on_while_new_ones_are_restored() {
    let started = Instant::now();
    let seed = seed() + 7;
    let topics = unique_topics("kept");
    create_topics(&topics, 4);
    let w = workload_of_users(seed, 50, 2_000, 20_000, 0.3);
    publish(&topics, &w.tables, Format::Json);
    let group = format!("g-{}", topics.activity);
    let start = |name: &str| Member {
        name: name.to_owned(),
        service: Service::start_connected(
            &ServiceOptions::hour_delay(&topics, &group, name),
            &["--brokers".to_owned(), brokers()],
            &[(
                "AUTOCLAIM_LOG",
                "info,autoclaim::pipeline::transaction=debug,librdkafka=warn,rdkafka=warn",
            )],
        ),
        seen: 0,
        owned: BTreeSet::new(),
    };
    let mut a = start("kept-a");
    let mut b = start("kept-b");
    wait_balanced("a and b to share the partitions", &[&a, &b], 4);
    a.restored_since();
    let kept: Vec<i32> = a.owned.iter().copied().collect();
    let restores_before = a
        .service
        .log_text()
        .matches("restoring newly assigned")
        .count();
    std::thread::scope(|scope| {
        let publisher = scope.spawn(|| {
            for chunk in w.activity.chunks(200) {
                publish(&topics, chunk, Format::Json);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        // Once the stream flows, b leaves: a gains b's partitions and restores them.
        wait_until("a to commit some of the stream", GUARD, || {
            stable_committed_sum(&topics, &group, &kept) > 0
        });
        assert!(b.service.stop().success(), "b: clean exit");
        wait_until("a to restore b's partitions", GUARD, || {
            let log = a.service.log_text();
            log.matches("restoring newly assigned").count() > restores_before
                && commits_during_last_restore(&log).is_some()
        });
        publisher.join().unwrap();
    });
    let log = a.service.log_text();
    let commits = commits_during_last_restore(&log).unwrap();
    assert!(
        commits > 0,
        "a committed nothing of its kept partitions {kept:?} while it restored; log:\n{log}"
    );
    wait_processed(&topics, &group, GUARD);
    let report = wait_clean(&topics, &group, GUARD);
    assert_equal_to_replay(&topics, &w.expected);
    a.restored_since();
    stop_all(&mut [("a", &mut a.service)]);
    eprintln!(
        "kept: FIGURES seed={seed} events={} directory_users=100000 partitions=4 kept={kept:?}: \
         {commits} transactions with records committed while b's partitions were restored; \
         assignments={} failures={} elapsed={:.1}s",
        w.activity.len(),
        report.counts.assignments,
        report.counts.failures,
        started.elapsed().as_secs_f64()
    );
}
