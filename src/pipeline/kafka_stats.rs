//! librdkafka's own statistics, where they answer an operator's question, as metrics. Both clients of
//! the processing loop (the activity consumer and the transactional producer) emit them every
//! `clients::STATISTICS_INTERVAL`.
//!
//! Chosen, and why (librdkafka's STATISTICS.md has the full list):
//! - `brokers[].rtt` p50 and p99, per broker and client: is a slow commit or a growing lag the
//!   network or broker (high round-trip), or this process? A transaction commit takes several round
//!   trips to the coordinator, so its time is bounded below by the producer's. The consumer's
//!   include fetches, which the broker holds up to `fetch.wait.max.ms` (500 ms) while nothing is
//!   waiting: librdkafka has no round trip per request type, so that one is read against 0.5 s.
//! - the producer's `msg_cnt`: outputs waiting for acknowledgement. It stays near a batch's size;
//!   a queue that keeps growing means brokers do not keep up, and commits will wait for it.
//! - the producer's `txmsgs`: messages sent, retries included. Against the committed outputs it
//!   shows retried or aborted work.
//!
//! Left out: per-partition figures (the lag gauges already have them, and series per partition
//! must be dropped at revocation), byte counts (the outputs are small and uniform) and the rest of
//! the consumer's fetch figures (its lag tells the same more plainly).
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::{ClientContext, Statistics};

use super::clients;
use crate::telemetry;

/// The round trip to one broker over the last statistics window.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerRtt {
    /// The broker's node id, as Kafka's tools show it.
    pub broker: String,
    pub p50_seconds: f64,
    pub p99_seconds: f64,
}

/// Round trips to the brokers of the cluster. The bootstrap entries (`configured`) and the
/// coordinators' aliases (`logical`) repeat a real broker's connection; a window without requests
/// has no figures (its zeros are not a fast broker), so the gauge keeps its last value.
pub fn broker_rtts(stats: &Statistics) -> Vec<BrokerRtt> {
    let mut rtts: Vec<BrokerRtt> = stats
        .brokers
        .values()
        .filter(|b| b.source == "learned" && b.nodeid >= 0)
        .filter_map(|b| {
            let rtt = b.rtt.as_ref().filter(|w| w.cnt > 0)?;
            Some(BrokerRtt {
                broker: b.nodeid.to_string(),
                p50_seconds: rtt.p50 as f64 / 1e6,
                p99_seconds: rtt.p99 as f64 / 1e6,
            })
        })
        .collect();
    rtts.sort_by(|a, b| a.broker.cmp(&b.broker));
    rtts
}

/// Sets the round-trip gauges of `client` ("producer" or "consumer").
pub fn record_rtts(client: &'static str, stats: &Statistics) {
    for rtt in broker_rtts(stats) {
        metrics::gauge!(telemetry::KAFKA_BROKER_RTT, "client" => client, "broker" => rtt.broker.clone(), "quantile" => "0.5")
            .set(rtt.p50_seconds);
        metrics::gauge!(telemetry::KAFKA_BROKER_RTT, "client" => client, "broker" => rtt.broker, "quantile" => "0.99")
            .set(rtt.p99_seconds);
    }
}

/// The transactional producer's figures.
pub fn record_producer(stats: &Statistics) {
    record_rtts("producer", stats);
    metrics::gauge!(telemetry::PRODUCER_QUEUE).set(stats.msg_cnt as f64);
    metrics::counter!(telemetry::PRODUCER_SENT).absolute(stats.txmsgs.max(0) as u64);
}

/// The context of the transactional producer: as rdkafka's default (deliveries are awaited through
/// the in-flight count, not callbacks), but its statistics become metrics and its errors are logged
/// as every other client's.
pub struct ProducerStats;

impl ClientContext for ProducerStats {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        clients::log_client_error(error, reason);
    }

    fn stats(&self, stats: Statistics) {
        record_producer(&stats);
    }
}

impl ProducerContext for ProducerStats {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    use rdkafka::statistics::{Broker, Window};

    fn broker(nodeid: i32, source: &str, rtt: Option<(i64, i64, i64)>) -> (String, Broker) {
        let name = format!("localhost:9092/{nodeid}");
        let broker = Broker {
            name: name.clone(),
            nodeid,
            source: source.into(),
            rtt: rtt.map(|(cnt, p50, p99)| Window {
                cnt,
                p50,
                p99,
                ..Window::default()
            }),
            ..Broker::default()
        };
        (name, broker)
    }

    #[test]
    fn round_trips_are_read_from_learned_brokers_with_requests() {
        // A bootstrap entry and a coordinator alias repeat broker 1; broker 2 had no requests.
        let stats = Statistics {
            brokers: [
                broker(-1, "configured", Some((1, 900, 900))),
                broker(1, "logical", Some((1, 700, 700))),
                broker(1, "learned", Some((10, 400, 8000))),
                broker(2, "learned", Some((0, 0, 0))),
                broker(3, "learned", None),
            ]
            .into_iter()
            .enumerate()
            .map(|(i, (name, b))| (format!("{name}#{i}"), b))
            .collect(),
            ..Statistics::default()
        };
        assert_eq!(
            broker_rtts(&stats),
            [BrokerRtt {
                broker: "1".into(),
                p50_seconds: 0.0004,
                p99_seconds: 0.008,
            }]
        );
    }
}
