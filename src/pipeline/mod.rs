//! Kafka: topics, the live table feed, partition restore, transactions and the processing loop.
pub mod admin;
pub mod clients;
pub mod config;
pub mod connect;
pub mod feed;
pub mod health;
pub mod kafka_stats;
pub mod metrics;
pub mod partitioner;
pub mod positions;
pub mod processor;
pub mod publish;
pub mod records;
pub mod restore;
pub mod security;
pub mod stall;
pub mod transaction;
