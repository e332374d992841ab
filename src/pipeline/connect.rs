//! The first contact with the cluster, made by every command before anything else: a wrong password,
//! an untrusted certificate or the wrong security protocol stops the command at once with the cause,
//! where librdkafka on its own would retry for ever and leave the command waiting.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientContext;
use thiserror::Error;

use super::clients;
use super::config::KafkaArgs;

/// How long one metadata request may take before the next try.
const ATTEMPT: Duration = Duration::from_millis(500);
/// A suspected protocol mismatch is trusted once the connection has stayed down this long after
/// it: long enough for a broker that restarted mid-handshake to come back, short enough to count as
/// failing fast. (librdkafka says each failure once and suppresses repeats, so no count would do.)
const MISMATCH_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("Kafka at {brokers} refused to authenticate this client (check the SASL mechanism, user name and password): {reason}")]
    Authentication { brokers: String, reason: String },
    #[error("TLS with Kafka at {brokers} failed (check --kafka-tls-ca, and --kafka-tls-cert/--kafka-tls-key where the broker requires a client certificate): {reason}")]
    Tls { brokers: String, reason: String },
    #[error("Kafka at {brokers} does not speak the configured security protocol (a TLS listener needs --kafka-security-protocol ssl or sasl-ssl, a SASL listener a --kafka-sasl-mechanism): {reason}")]
    WrongProtocol { brokers: String, reason: String },
    #[error("no Kafka broker at {brokers} answered within {timeout:?}; last error: {reason}")]
    Unreachable {
        brokers: String,
        timeout: Duration,
        reason: String,
    },
    #[error("invalid Kafka client settings: {0}")]
    Settings(#[from] KafkaError),
}

/// What one of librdkafka's failure texts (librdkafka 2.12) says about the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The broker refused the credentials.
    Authentication,
    /// The TLS handshake failed: an untrusted certificate, or a client certificate refused.
    Tls,
    /// The broker hung up where a listener of another protocol would: a TLS listener on a plaintext
    /// client's first request (a TLS client would still be in its handshake), or a SASL listener
    /// right after a client without SASL connected.
    Mismatch,
    /// Anything else (a broker down, a refused connection): retried.
    Other,
}

fn classify(code: Option<RDKafkaErrorCode>, text: &str) -> Failure {
    match code {
        Some(RDKafkaErrorCode::Authentication) => return Failure::Authentication,
        Some(RDKafkaErrorCode::SSL) => return Failure::Tls,
        _ => {}
    }
    // An OpenSSL error inside a transport failure: the broker's alert that it refused the client's
    // certificate (or that there was none).
    if text.contains("SSL routines") {
        return Failure::Tls;
    }
    let hung_up = text.contains("Disconnected");
    let early = text.contains("in state APIVERSION_QUERY")
        || text.contains("incorrect security.protocol")
        || text.contains("broker might require SASL")
        || (text.contains("in state UP") && !text.contains("SASL"));
    if hung_up && early {
        Failure::Mismatch
    } else {
        Failure::Other
    }
}

/// What the client of a connection attempt reported.
#[derive(Default)]
struct Observed {
    fatal: Option<(Failure, String)>,
    /// Since when the latest failures all look like a protocol mismatch.
    mismatch: Option<(Instant, String)>,
    last: Option<String>,
}

impl Observed {
    fn record(&mut self, failure: Failure, text: &str) {
        match failure {
            Failure::Authentication | Failure::Tls => {
                self.fatal.get_or_insert_with(|| (failure, text.to_owned()));
            }
            Failure::Mismatch => {
                self.mismatch
                    .get_or_insert_with(|| (Instant::now(), text.to_owned()));
            }
            Failure::Other => {}
        }
        self.last = Some(text.to_owned());
    }
}

#[derive(Default)]
struct RecordingContext(Mutex<Observed>);

impl RecordingContext {
    fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for RecordingContext {
    /// librdkafka says why a connection closed in a log line (facility FAIL), not an error event.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "FAIL" {
            let failure = classify(None, message);
            let mut observed = self.observed();
            // A broker that went away (a refused reconnect) explains an early hang-up better than
            // a mismatch does; a real mismatch repeats only the same (suppressed) hang-up.
            if failure == Failure::Other {
                observed.mismatch = None;
            }
            observed.record(failure, message);
        }
        tracing::debug!(?level, fac, message, "librdkafka (first contact)");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let failure = classify(error.rdkafka_error_code(), reason);
        let mut observed = self.observed();
        // "All brokers are down" says less than the log line that said why.
        if failure != Failure::Other || observed.last.is_none() {
            observed.record(failure, &format!("{error}: {reason}"));
        }
    }
}

impl rdkafka::producer::ProducerContext for RecordingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Fetches the cluster's metadata, retrying transient failures until `timeout`; an authentication
/// or TLS failure, or a listener of another protocol, ends it early with the cause.
pub fn check(kafka: &KafkaArgs, timeout: Duration) -> Result<(), ConnectError> {
    let mut config = clients::admin(kafka);
    // rdkafka takes the level from the `log` crate, which is off in commands that do not log; the
    // reasons connections close come as log lines.
    config.set_log_level(RDKafkaLogLevel::Info);
    let producer: BaseProducer<RecordingContext> =
        config.create_with_context(RecordingContext::default())?;
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = producer.client().fetch_metadata(None, ATTEMPT);
        // Serves the error callbacks of what the request ran into.
        producer.poll(Duration::ZERO);
        if attempt.is_ok() {
            return Ok(());
        }
        let observed = producer.context().observed();
        if let Some(error) = diagnose(&kafka.brokers, &observed) {
            return Err(error);
        }
        if Instant::now() >= deadline {
            let reason = observed
                .last
                .clone()
                .unwrap_or_else(|| attempt.err().map_or_else(String::new, |e| e.to_string()));
            return Err(ConnectError::Unreachable {
                brokers: kafka.brokers.clone(),
                timeout,
                reason,
            });
        }
    }
}

fn diagnose(brokers: &str, observed: &Observed) -> Option<ConnectError> {
    let brokers = brokers.to_owned();
    if let Some((failure, reason)) = &observed.fatal {
        let reason = reason.clone();
        return Some(match failure {
            Failure::Authentication => ConnectError::Authentication { brokers, reason },
            _ => ConnectError::Tls { brokers, reason },
        });
    }
    let (since, reason) = observed.mismatch.as_ref()?;
    (since.elapsed() >= MISMATCH_GRACE).then(|| ConnectError::WrongProtocol {
        brokers,
        reason: reason.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// librdkafka 2.12.1's texts, as seen against the test broker's listeners.
    #[test]
    fn librdkafka_s_failure_texts_are_read_as_their_cause() {
        let cases = [
            (
                Some(RDKafkaErrorCode::Authentication),
                "sasl_ssl://127.0.0.1:52160/bootstrap: SASL authentication error: Authentication \
                 failed during authentication due to invalid credentials with SASL mechanism \
                 SCRAM-SHA-512 (after 314ms in state AUTH_REQ)",
                Failure::Authentication,
            ),
            (
                Some(RDKafkaErrorCode::SSL),
                "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed",
                Failure::Tls,
            ),
            (
                Some(RDKafkaErrorCode::BrokerTransportFailure),
                "ssl://127.0.0.1:21254/bootstrap: Receive failed: error:0A000412:SSL \
                 routines::sslv3 alert bad certificate: SSL alert number 42 (after 0ms in state \
                 APIVERSION_QUERY)",
                Failure::Tls,
            ),
            (
                None,
                "127.0.0.1:52160/bootstrap: Disconnected: connection closed by peer: receive 0 \
                 after POLLIN (after 1ms in state APIVERSION_QUERY)",
                Failure::Mismatch,
            ),
            (
                None,
                "ssl://127.0.0.1:52160/bootstrap: Disconnected: SSL connection closed by peer \
                 (after 1ms in state UP)",
                Failure::Mismatch,
            ),
            (
                None,
                "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused \
                 (after 0ms in state CONNECT)",
                Failure::Other,
            ),
            (
                Some(RDKafkaErrorCode::AllBrokersDown),
                "1/1 brokers are down",
                Failure::Other,
            ),
        ];
        for (code, text, expected) in cases {
            assert_eq!(classify(code, text), expected, "{text}");
        }
    }

    #[test]
    fn a_mismatch_is_trusted_only_after_the_grace_time() {
        let mut observed = Observed::default();
        observed.record(
            Failure::Mismatch,
            "Disconnected ... in state APIVERSION_QUERY",
        );
        assert!(diagnose("b:1", &observed).is_none(), "not at once");
        observed.mismatch = Some((Instant::now() - MISMATCH_GRACE, "hung up".into()));
        assert!(matches!(
            diagnose("b:1", &observed),
            Some(ConnectError::WrongProtocol { .. })
        ));
    }

    #[test]
    fn a_refused_reconnect_after_a_hang_up_is_a_broker_away_not_a_mismatch() {
        let context = RecordingContext::default();
        let hang_up =
            "b:1/bootstrap: Disconnected: SSL connection closed by peer (after 1ms in state UP)";
        context.log(RDKafkaLogLevel::Info, "FAIL", hang_up);
        assert!(context.observed().mismatch.is_some());
        let refused = "b:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused";
        context.log(RDKafkaLogLevel::Error, "FAIL", refused);
        assert!(context.observed().mismatch.is_none());
    }

    #[test]
    fn an_authentication_or_tls_failure_is_final_at_once() {
        let mut observed = Observed::default();
        observed.record(Failure::Other, "Connection refused");
        assert!(diagnose("b:1", &observed).is_none());
        observed.record(Failure::Authentication, "bad password");
        observed.record(Failure::Tls, "later");
        let error = diagnose("b:1", &observed).expect("final").to_string();
        assert!(error.contains("refused to authenticate") && error.contains("bad password"));
    }
}
