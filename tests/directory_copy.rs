//! The directory copy against a real broker (AUTOCLAIM_TEST_BROKERS): the directory topic copied,
//! exactly once, to the directory-by-partition topic, each row to the partition of its tenant, so
//! that a restore reads only its partitions' share.
//!
//! * A first start on a large directory with events already waiting, while a member of the copy's
//!   group holds part of the directory uncopied: the restore waits for the copy, so nothing is
//!   decided with a half-copied directory (every row is in the restored state, the outputs equal
//!   replay's).
//! * Rows written while the service runs reach the owning partition through the live feed of the
//!   copy, each once.
//! * A member joining a group of 48 partitions restores its partitions from their share of the copy
//!   alone; the member that gave them up restores nothing.
mod kafka_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use autoclaim::pipeline::directory_copy::copy_group;
use autoclaim::pipeline::partitioner::tenant_partition;
use autoclaim::wire::{pb, Format};
use kafka_support::*;

/// Guards against a hang; not a performance threshold.
const GUARD: Duration = Duration::from_secs(600);

fn workload(seed: u64, tenants: usize, users_per_tenant: usize, events: usize) -> Workload {
    workload_of_users(seed, tenants, users_per_tenant, events, 0.3)
}

/// Directory users per partition number, as the copy places them.
fn users_by_partition(tables: &[pb::ReplayRecord], partitions: i32) -> BTreeMap<i32, u64> {
    let mut counts = BTreeMap::new();
    for r in tables {
        if let Some(pb::replay_record::Record::DirectoryUser(u)) = &r.record {
            *counts
                .entry(tenant_partition(&u.tenant_id, partitions))
                .or_default() += 1;
        }
    }
    counts
}

/// One "partition state restored" line: the partitions, and the directory rows read and applied.
#[derive(Debug)]
struct Restore {
    partitions: BTreeSet<i32>,
    directory_read: u64,
    directory_rows: u64,
}

fn number_field(line: &str, field: &str) -> Option<u64> {
    line.split(&format!(" {field}="))
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn restores(log: &str) -> Vec<Restore> {
    log.lines()
        .filter(|l| l.contains("partition state restored"))
        .filter_map(|line| {
            let list = line.split(" partitions=[").nth(1)?.split(']').next()?;
            Some(Restore {
                partitions: list
                    .split(',')
                    .filter_map(|p| p.trim().parse().ok())
                    .collect(),
                directory_read: number_field(line, "directory_read")?,
                directory_rows: number_field(line, "directory_rows")?,
            })
        })
        .collect()
}

/// A member of the directory copy's group that copies nothing: the partitions it holds are not
/// copied until it leaves, as when a copy member is slow, restarting or stuck.
struct IdleCopyMember {
    leave: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl IdleCopyMember {
    /// Joins the copy group of `group` and returns once it holds directory partitions.
    fn join(topics: &Topics, group: &str) -> Self {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use std::sync::atomic::Ordering;
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", copy_group(group))
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .create()
            .expect("idle copy member");
        consumer.subscribe(&[&topics.directory]).unwrap();
        let leave = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (joined, assigned) = std::sync::mpsc::channel();
        let leaving = std::sync::Arc::clone(&leave);
        let thread = std::thread::spawn(move || {
            let mut told = false;
            while !leaving.load(Ordering::Relaxed) {
                // Records are fetched and dropped: nothing copied, nothing committed.
                let _ = consumer.poll(Duration::from_millis(100));
                if !told && consumer.assignment().is_ok_and(|a| a.count() > 0) {
                    told = joined.send(()).is_ok();
                }
            }
            consumer.unsubscribe();
        });
        assigned
            .recv_timeout(GUARD)
            .expect("the idle member got partitions");
        IdleCopyMember { leave, thread }
    }

    fn leave(self) {
        self.leave.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

#[test]
fn a_first_start_on_a_large_directory_with_events_waiting_decides_with_every_row() {
    let topics = unique_topics("copy-cold");
    create_topics(&topics, 6);
    // 100,000 users, and the events already waiting.
    let w = workload(91, 50, 2_000, 20_000);
    let users: u64 = users_by_partition(&w.tables, 6).values().sum();
    publish(&topics, &w.tables, Format::Json);
    publish(&topics, &w.activity, Format::Json);
    let group = format!("g-{}", topics.activity);
    // Part of the directory stays uncopied until the service's restore is seen waiting for it: a
    // restore that did not wait would decide with a half-copied directory.
    let idle = IdleCopyMember::join(&topics, &group);
    let mut service = Service::start(&ServiceOptions::hour_delay(&topics, &group, "copy-cold"));
    wait_until("the restore to wait for the directory copy", GUARD, || {
        service
            .log_text()
            .contains("waiting for the directory copy to catch up")
    });
    idle.leave();
    wait_processed(&topics, &group, GUARD);
    let log = service.log_text();
    let restored = restores(&log);
    let rows: u64 = restored.iter().map(|r| r.directory_rows).sum();
    assert_eq!(
        rows, users,
        "the restores applied {rows} directory rows of {users}; log:\n{log}"
    );
    let report = wait_clean(&topics, &group, GUARD);
    assert_equal_to_replay(&topics, &w.expected);
    assert!(service.stop().success(), "clean exit; log:\n{log}");
    eprintln!(
        "copy-cold: FIGURES directory_users={users} events={} restores={} assignments={} failures={}",
        w.activity.len(),
        restored.len(),
        report.counts.assignments,
        report.counts.failures
    );
}

#[test]
fn a_member_joining_restores_its_partitions_from_their_share_of_the_directory_alone() {
    const PARTITIONS: i32 = 48;
    let topics = unique_topics("copy-share");
    create_topics(&topics, PARTITIONS);
    let w = workload(92, 200, 150, 4_000);
    let by_partition = users_by_partition(&w.tables, PARTITIONS);
    let users: u64 = by_partition.values().sum();
    publish(&topics, &w.tables, Format::Json);
    let group = format!("g-{}", topics.activity);
    let mut a = Service::start(&ServiceOptions::hour_delay(&topics, &group, "copy-share-a"));
    wait_until("a to restore all 48 partitions", GUARD, || {
        restores(&a.log_text())
            .iter()
            .map(|r| r.partitions.len())
            .sum::<usize>()
            == PARTITIONS as usize
    });
    let a_before = restores(&a.log_text()).len();
    let mut b = Service::start(&ServiceOptions::hour_delay(&topics, &group, "copy-share-b"));
    wait_until("b to restore the partitions it took", GUARD, || {
        !restores(&b.log_text()).is_empty()
    });
    publish(&topics, &w.activity, Format::Json);
    wait_processed(&topics, &group, GUARD);
    let b_restores = restores(&b.log_text());
    for r in &b_restores {
        let share: u64 = r.partitions.iter().map(|p| by_partition[p]).sum();
        assert_eq!(
            (r.directory_read, r.directory_rows),
            (share, share),
            "b's restore of {:?} read {} copy records and applied {} rows; their share is {share} \
             of {users}",
            r.partitions,
            r.directory_read,
            r.directory_rows
        );
        assert!(share < users, "b took every partition: {:?}", r.partitions);
    }
    let a_log = a.log_text();
    assert_eq!(
        restores(&a_log).len(),
        a_before,
        "a gave partitions up and must restore nothing; log:\n{a_log}"
    );
    wait_clean(&topics, &group, GUARD);
    assert_equal_to_replay(&topics, &w.expected);
    for (name, s) in [("a", &mut a), ("b", &mut b)] {
        assert!(s.stop().success(), "{name}: clean exit");
    }
    let moved: Vec<usize> = b_restores.iter().map(|r| r.partitions.len()).collect();
    eprintln!(
        "copy-share: FIGURES directory_users={users} partitions={PARTITIONS} b_restored={moved:?} \
         b_read={:?}",
        b_restores
            .iter()
            .map(|r| r.directory_read)
            .collect::<Vec<_>>()
    );
}

/// The directory rows the instance has applied from the live feed (read back from the copy).
fn directory_rows_applied(service: &Service) -> f64 {
    let (_, metrics) = http_get(service.http_addr(), "/metrics");
    metric_with_labels(
        &metrics,
        "autoclaim_table_records_total",
        &["table=\"directory\"", "result=\"applied\""],
    )
}

#[test]
fn directory_rows_written_while_the_service_runs_reach_the_owning_partition() {
    let topics = unique_topics("copy-live");
    create_topics(&topics, 6);
    let w = workload(93, 20, 100, 3_000);
    let is_directory = |r: &&pb::ReplayRecord| {
        matches!(r.record, Some(pb::replay_record::Record::DirectoryUser(_)))
    };
    let directory: Vec<pb::ReplayRecord> = w.tables.iter().filter(is_directory).cloned().collect();
    let others: Vec<pb::ReplayRecord> = w
        .tables
        .iter()
        .filter(|r| !is_directory(r))
        .cloned()
        .collect();
    let (before, after) = directory.split_at(directory.len() / 2);
    publish(&topics, &others, Format::Json);
    publish(&topics, before, Format::Json);
    let group = format!("g-{}", topics.activity);
    let mut service = Service::start(&ServiceOptions::hour_delay(&topics, &group, "copy-live"));
    wait_until("the service to restore its partitions", GUARD, || {
        restores(&service.log_text())
            .iter()
            .map(|r| r.partitions.len())
            .sum::<usize>()
            == 6
    });
    // Half the directory arrives after the restores: only the live feed of the copy brings it.
    publish(&topics, after, Format::Json);
    wait_until(
        "the live feed to apply the rows written after the restore",
        GUARD,
        || directory_rows_applied(&service) >= after.len() as f64,
    );
    publish(&topics, &w.activity, Format::Json);
    wait_processed(&topics, &group, GUARD);
    wait_clean(&topics, &group, GUARD);
    assert_equal_to_replay(&topics, &w.expected);
    assert_eq!(
        directory_rows_applied(&service),
        after.len() as f64,
        "each row written after the restore applied once"
    );
    assert!(service.stop().success(), "clean exit");
}

#[test]
fn a_copy_killed_part_way_copies_each_row_once_to_the_partition_of_its_tenant() {
    let topics = unique_topics("copy-kill");
    create_topics(&topics, 6);
    let w = workload(94, 100, 2_000, 0);
    let users = users_by_partition(&w.tables, 6).values().sum::<u64>() as usize;
    publish(&topics, &w.tables, Format::Json);
    let group = format!("g-{}", topics.activity);
    let mut first = Service::start(&ServiceOptions::hour_delay(&topics, &group, "copy-kill"));
    // SIGKILLed once the copy has committed some rows, with a copy transaction most likely open.
    wait_until("the copy to commit some rows", GUARD, || {
        committed_in(&topics.directory_by_partition) > 0
    });
    first.kill();
    let at_kill = committed_in(&topics.directory_by_partition);
    let mut second = Service::start(&ServiceOptions::hour_delay(&topics, &group, "copy-kill"));
    wait_until("the restarted service to restore every row", GUARD, || {
        restores(&second.log_text())
            .iter()
            .map(|r| r.directory_rows)
            .sum::<u64>()
            == users as u64
    });
    let copied = read_committed(&topics.directory_by_partition);
    let keys: BTreeSet<&[u8]> = copied.iter().filter_map(|r| r.key.as_deref()).collect();
    assert_eq!(
        (copied.len(), keys.len()),
        (users, users),
        "every directory row copied once (records, distinct keys)"
    );
    for r in &copied {
        let key = std::str::from_utf8(r.key.as_deref().unwrap()).unwrap();
        let tenant = key.split('/').next().unwrap();
        assert_eq!(
            tenant_partition(tenant, 6),
            r.partition,
            "{key} copied to partition {}",
            r.partition
        );
    }
    assert!(second.stop().success(), "clean exit");
    eprintln!("copy-kill: FIGURES directory_users={users} committed_at_kill={at_kill}");
}

/// Offsets up to the last stable offset of every partition of `topic` (records and markers).
fn committed_in(topic: &str) -> i64 {
    let config = autoclaim::pipeline::clients::table_reader(&kafka());
    autoclaim::pipeline::topic_reader::watermarks(&config, topic, Duration::from_secs(10))
        .map(|marks| marks.values().map(|(_, high)| high).sum())
        .unwrap_or(0)
}
