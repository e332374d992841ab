//! autoclaim: a Kafka-native stream processor that assigns Power Automate licences when users start to
//! need them, following each tenant's autoclaim policies, exactly once.
pub mod admin;
pub mod demo;
pub mod domain;
pub mod error_text;
pub mod http;
pub mod loadgen;
pub mod logging;
pub mod pipeline;
pub mod progress;
pub mod replay;
pub mod scenario;
pub mod signal;
pub mod state;
pub mod telemetry;
pub mod verify;
pub mod wire;
