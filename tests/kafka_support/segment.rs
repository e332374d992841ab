//! Record batches as the broker under test keeps them in its log segment files: their codec, and a
//! batch made unreadable in place (its records overwritten and its CRC made right again, so the
//! broker serves it and only decompression fails), for the codec and stall tests.
use std::path::{Path, PathBuf};

/// Size of a v2 record batch header, up to the first record.
const HEADER: usize = 61;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const COUNT_AT: usize = 57;
const CONTROL_BIT: u16 = 0x20;

#[derive(Debug, Clone)]
pub struct Batch {
    pub base_offset: i64,
    pub records: i32,
    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub codec: u16,
    pub control: bool,
    start: usize,
    end: usize,
}

/// The data directory of the broker under test (scripts/test sets AUTOCLAIM_KAFKA_RUN).
fn data_dir() -> PathBuf {
    let run = std::env::var("AUTOCLAIM_KAFKA_RUN").unwrap_or_else(|_| {
        panic!(
            "AUTOCLAIM_KAFKA_RUN is not set: this test reads the broker's log segments and needs \
             its run dir. Run it through `scripts/test`, or set AUTOCLAIM_KAFKA_RUN to the run dir \
             of the broker at AUTOCLAIM_TEST_BROKERS."
        )
    });
    Path::new(&run).join("data")
}

/// Every segment file of a partition, in offset order.
pub fn segments(topic: &str, partition: i32) -> Vec<PathBuf> {
    let dir = data_dir().join(format!("{topic}-{partition}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

fn be_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(bytes[at..at + 2].try_into().unwrap())
}

fn be_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// The batches of one segment file.
pub fn batches(segment: &Path) -> Vec<Batch> {
    let bytes = std::fs::read(segment).unwrap();
    let mut out = Vec::new();
    let mut start = 0;
    while start + HEADER <= bytes.len() {
        let base_offset = i64::from_be_bytes(bytes[start..start + 8].try_into().unwrap());
        let length = be_i32(&bytes, start + 8);
        if length <= 0 {
            break;
        }
        let end = start + 12 + length as usize;
        let attributes = be_u16(&bytes, start + ATTRIBUTES_AT);
        out.push(Batch {
            base_offset,
            records: be_i32(&bytes, start + COUNT_AT),
            codec: attributes & 0x7,
            control: attributes & CONTROL_BIT != 0,
            start,
            end,
        });
        start = end;
    }
    out
}

/// Every batch of a topic's partitions.
pub fn topic_batches(topic: &str, partitions: i32) -> Vec<Batch> {
    (0..partitions)
        .flat_map(|p| segments(topic, p))
        .flat_map(|s| batches(&s))
        .collect()
}

/// Overwrites the records of `batch` and writes a CRC that matches, so the broker still serves it
/// and the consumer fails only when it decompresses it.
pub fn corrupt(segment: &Path, batch: &Batch) {
    let mut bytes = std::fs::read(segment).unwrap();
    bytes[batch.start + HEADER..batch.end].fill(0x5a);
    let crc = crc32c::crc32c(&bytes[batch.start + ATTRIBUTES_AT..batch.end]);
    bytes[batch.start + CRC_AT..batch.start + ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
    // In place, not a new file: the broker keeps the segment open and serves what is in it.
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap();
    file.seek(SeekFrom::Start(batch.start as u64)).unwrap();
    file.write_all(&bytes[batch.start..batch.end]).unwrap();
}
