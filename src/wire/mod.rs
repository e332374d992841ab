//! The wire: generated types, their two encodings, and conversion into and out of the domain.
pub mod activity_fields;
pub mod activity_json;
pub mod claims;
pub mod codec;
pub mod convert;
pub mod error;
pub mod generated;
mod number;
mod open_enum;
pub mod output;
pub mod timestamp;

pub use codec::Format;
pub use error::WireError;
pub use generated as pb;

/// The schema's descriptors (a `google.protobuf.FileDescriptorSet` of `proto/`, as `build.rs`
/// compiled it), for tools and tests that need the schema at run time.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/autoclaim_descriptor.bin"));
