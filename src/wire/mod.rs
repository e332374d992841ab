//! The wire: generated types, their two encodings, and conversion into and out of the domain.
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
