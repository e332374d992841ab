//! A partition's restore against the number of partitions: one directory of U users, copied by
//! `run` into the directory copy of activity topics of 6, 24 and 48 partitions (the partition counts
//! are arguments); then the restore of one partition and of every partition, by the library's own
//! restore in this process, each timed with the copy records and bytes it read.

use autoclaim::pipeline::copy_cut::CopySource;
use autoclaim::pipeline::directory_copy::copy_group;
use autoclaim::pipeline::restore::{restore_partitions, RestoreStats};
use serde_json::json;

use crate::child::restore_log_field;
use crate::cluster::topic_set;
use crate::harness::Bench;
use crate::procfs::loadavg;

/// Single-partition restores measured per partition count (partitions 0, 1, 2).
const SINGLE_RESTORES: i32 = 3;

struct ShareFigures {
    partitions: i32,
    /// `run` from spawn to ready: copying the whole directory, then restoring every partition.
    copy_and_restore_secs: f64,
    /// Of that, what its restore waited for the copy (its log's `copy_wait_ms`).
    copy_wait_secs: f64,
    single: Vec<RestoreStats>,
    all: RestoreStats,
    load: String,
}

impl Bench<'_> {
    pub(crate) fn restore_share(&mut self) -> anyhow::Result<()> {
        let a = self.args;
        let users = a.share_users;
        let tables = format!("share-{users}");
        let mut rows = Vec::new();
        let mut directory = None;
        for &partitions in &a.share_partitions {
            let name = format!("share-{partitions}");
            let topics = topic_set(&self.prefix, &tables, &name, &name);
            self.cluster.create(&topics, partitions)?;
            if directory.is_none() {
                let secs = self.publish_directory(&topics, users)?;
                println!("restore-share: {users} directory users published in {secs:.1} s");
                directory = Some(topics.directory.clone());
            }
            let figures = self.share_round(&topics, partitions)?;
            figures.print(users);
            rows.push(figures.json(users));
            self.cluster.delete(&[
                topics.directory_by_partition.clone(),
                topics.activity.clone(),
            ]);
        }
        self.cluster
            .delete(&directory.into_iter().collect::<Vec<_>>());
        self.results.insert("restore_share".into(), json!(rows));
        Ok(())
    }

    /// `run` started on the topics until ready (the directory copied, every partition restored) and
    /// stopped; then single-partition restores and one of every partition, in this process.
    fn share_round(
        &mut self,
        topics: &autoclaim::pipeline::config::Topics,
        partitions: i32,
    ) -> anyhow::Result<ShareFigures> {
        let group = format!("{}.share-{partitions}", self.prefix);
        let mut child = self.child(topics, &group, &format!("{group}-0"))?;
        let ready = child.wait_ready(std::time::Duration::from_millis(50))?;
        let copy_and_restore_secs = ready.duration_since(child.spawned).as_secs_f64();
        let copy_wait_secs = restore_log_field(&child.log_text(), "copy_wait_ms")
            .into_iter()
            .max()
            .unwrap_or(0) as f64
            / 1000.0;
        child.stop();
        let copy = CopySource::group(copy_group(&group));
        let restore = |list: &[i32]| -> anyhow::Result<RestoreStats> {
            Ok(restore_partitions(&self.args.kafka, topics, list, &copy)?.stats)
        };
        let single = (0..SINGLE_RESTORES.min(partitions))
            .map(|p| restore(&[p]))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let every: Vec<i32> = (0..partitions).collect();
        let all = restore(&every)?;
        Ok(ShareFigures {
            partitions,
            copy_and_restore_secs,
            copy_wait_secs,
            single,
            all,
            load: loadavg(),
        })
    }
}

fn secs(stats: &RestoreStats) -> f64 {
    stats.elapsed.as_secs_f64()
}

impl ShareFigures {
    fn print(&self, users: usize) {
        let single: Vec<String> = self
            .single
            .iter()
            .map(|s| {
                format!(
                    "{:.2} s / {} records / {:.1} MiB",
                    secs(s),
                    s.directory_read,
                    s.directory_bytes as f64 / 1048576.0
                )
            })
            .collect();
        println!(
            "restore-share {users} users, {} partitions: run ready in {:.1} s (of which its restore \
             waited {:.1} s for the copy); one partition: [{}]; all partitions: {:.2} s / {} records \
             / {:.1} MiB; load {}",
            self.partitions,
            self.copy_and_restore_secs,
            self.copy_wait_secs,
            single.join(", "),
            secs(&self.all),
            self.all.directory_read,
            self.all.directory_bytes as f64 / 1048576.0,
            self.load
        );
    }

    fn json(&self, users: usize) -> serde_json::Value {
        let stats = |s: &RestoreStats| {
            json!({
                "secs": secs(s),
                "copy_wait_secs": s.copy_wait.as_secs_f64(),
                "directory_read": s.directory_read,
                "directory_bytes": s.directory_bytes,
                "directory_rows": s.directory_rows,
            })
        };
        json!({
            "users": users,
            "partitions": self.partitions,
            "copy_and_restore_secs": self.copy_and_restore_secs,
            "copy_wait_secs": self.copy_wait_secs,
            "single": self.single.iter().map(stats).collect::<Vec<_>>(),
            "all": stats(&self.all),
            "load": self.load,
        })
    }
}
