//! Which activity partition a tenant belongs to. Activity producers key records by tenant id with
//! Kafka's default partitioner (murmur2, as the Java client and librdkafka's `murmur2_random` do), so
//! the processor can tell which instance owns a tenant's directory rows without any coordination.
//! A record that arrives elsewhere (another partitioner) is routed to its tenant's partition:
//! `placement` is that rule, for the processor and for the checker of what it did.
use super::transaction::Input;

/// Kafka's murmur2 hash (the variant of `org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition Kafka's default partitioner picks for a record keyed by `tenant_id`.
pub fn tenant_partition(tenant_id: &str, partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    ((murmur2(tenant_id.as_bytes()) & 0x7fff_ffff) % partitions as u32) as i32
}

/// Where a readable activity record is decided, by the partition (of `input`) it arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On its tenant's partition: decided there.
    Owned,
    /// On another partition of the activity topic: routed to its tenant's partition, `owner`.
    Route { owner: i32 },
    /// On another partition of the repartition topic: routed under another partition count.
    /// Deciding it there would give its tenant a second writer, so it is dead-lettered.
    Misrouted { owner: i32 },
}

/// Where a record of `tenant_id` that arrived on `partition` of `input` is decided, with
/// `partitions` activity partitions.
pub fn placement(tenant_id: &str, partition: i32, input: Input, partitions: i32) -> Placement {
    let owner = tenant_partition(tenant_id, partitions);
    match input {
        _ if owner == partition => Placement::Owned,
        Input::Activity => Placement::Route { owner },
        Input::Repartition => Placement::Misrouted { owner },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kafkas_reference_values() {
        // Values from the Apache Kafka client's own murmur2 test cases (as signed 32-bit ints).
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input) as i32,
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_record_off_its_tenants_partition_is_routed_once_and_never_again() {
        let owner = tenant_partition("tenant-1", 3);
        let other = (owner + 1) % 3;
        for input in [Input::Activity, Input::Repartition] {
            assert_eq!(placement("tenant-1", owner, input, 3), Placement::Owned);
        }
        assert_eq!(
            placement("tenant-1", other, Input::Activity, 3),
            Placement::Route { owner }
        );
        assert_eq!(
            placement("tenant-1", other, Input::Repartition, 3),
            Placement::Misrouted { owner }
        );
    }

    #[test]
    fn partitions_are_in_range() {
        for i in 0..1000 {
            let p = tenant_partition(&format!("tenant-{i}"), 7);
            assert!((0..7).contains(&p));
        }
    }
}
