//! How every Kafka client of the binary encrypts and authenticates: first-class flags, checked for
//! combinations that cannot work, and turned into librdkafka's properties once, before any client
//! is made. Secrets never reach a log: they are held in `Secret`, whose `Debug` hides them.
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, ValueEnum};
use thiserror::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    fn property(self) -> &'static str {
        match self {
            Protocol::Plaintext => "plaintext",
            Protocol::Ssl => "ssl",
            Protocol::SaslPlaintext => "sasl_plaintext",
            Protocol::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }

    fn uses_tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mechanism {
    Plain,
    #[value(name = "scram-sha-256")]
    ScramSha256,
    #[value(name = "scram-sha-512")]
    ScramSha512,
    Oauthbearer,
}

impl Mechanism {
    fn property(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::Oauthbearer => "OAUTHBEARER",
        }
    }
}

/// A password or client secret: `Debug` prints a placeholder, so no derived `Debug` of a config
/// that holds one can leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// TLS and SASL settings of every Kafka client (service, admin API, restore, verify, report,
/// publish, loadgen, create-topics).
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityArgs {
    /// How clients connect. Default: sasl-ssl when a SASL mechanism is given, ssl when only TLS
    /// files are, plaintext otherwise.
    #[arg(
        long = "kafka-security-protocol",
        env = "AUTOCLAIM_KAFKA_SECURITY_PROTOCOL",
        value_enum
    )]
    pub protocol: Option<Protocol>,
    /// SASL mechanism: plain, scram-sha-256, scram-sha-512 or oauthbearer (OIDC client credentials).
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "AUTOCLAIM_KAFKA_SASL_MECHANISM",
        value_enum
    )]
    pub sasl_mechanism: Option<Mechanism>,
    #[arg(long = "kafka-sasl-username", env = "AUTOCLAIM_KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// Prefer the environment variable or --kafka-sasl-password-file: a flag shows in `ps`.
    #[arg(
        long = "kafka-sasl-password",
        env = "AUTOCLAIM_KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<Secret>,
    /// A file holding the SASL password (a mounted secret); a trailing newline is ignored.
    #[arg(
        long = "kafka-sasl-password-file",
        env = "AUTOCLAIM_KAFKA_SASL_PASSWORD_FILE",
        conflicts_with = "sasl_password"
    )]
    pub sasl_password_file: Option<PathBuf>,
    /// PEM file of the CA certificates that sign the brokers' certificates. Default: the system's
    /// trust store. The broker's certificate and host name are verified (librdkafka's defaults).
    #[arg(long = "kafka-tls-ca", env = "AUTOCLAIM_KAFKA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM file of this client's certificate, for brokers that require mutual TLS.
    #[arg(long = "kafka-tls-cert", env = "AUTOCLAIM_KAFKA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the private key of --kafka-tls-cert (unencrypted).
    #[arg(long = "kafka-tls-key", env = "AUTOCLAIM_KAFKA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// OAUTHBEARER: the identity provider's token endpoint (client-credentials grant).
    #[arg(
        long = "kafka-oauth-token-endpoint",
        env = "AUTOCLAIM_KAFKA_OAUTH_TOKEN_ENDPOINT"
    )]
    pub oauth_token_endpoint: Option<String>,
    #[arg(
        long = "kafka-oauth-client-id",
        env = "AUTOCLAIM_KAFKA_OAUTH_CLIENT_ID"
    )]
    pub oauth_client_id: Option<String>,
    #[arg(
        long = "kafka-oauth-client-secret",
        env = "AUTOCLAIM_KAFKA_OAUTH_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub oauth_client_secret: Option<Secret>,
    #[arg(long = "kafka-oauth-scope", env = "AUTOCLAIM_KAFKA_OAUTH_SCOPE")]
    pub oauth_scope: Option<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SecurityError {
    #[error("--kafka-security-protocol {0} needs --kafka-sasl-mechanism")]
    MechanismMissing(&'static str),
    #[error("--kafka-sasl-mechanism is set but --kafka-security-protocol {0} does not use SASL")]
    MechanismWithoutSasl(&'static str),
    #[error(
        "TLS files (--kafka-tls-*) are set but --kafka-security-protocol {0} does not use TLS"
    )]
    TlsWithoutTls(&'static str),
    #[error("SASL {mechanism} needs {missing}")]
    CredentialMissing {
        mechanism: &'static str,
        missing: &'static str,
    },
    #[error("--kafka-tls-cert and --kafka-tls-key go together (mutual TLS needs both)")]
    HalfAClientCertificate,
    #[error("cannot read {what} {path}: {reason}")]
    Unreadable {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("the SASL password file {0} is empty")]
    EmptyPasswordFile(String),
    #[error("--kafka-property {0} is also set by a --kafka-* security flag; give it one way only")]
    SetTwice(String),
}

type Properties = Vec<(String, String)>;

impl SecurityArgs {
    /// librdkafka's properties for these settings (none for a plain connection). `overrides` are
    /// the operator's `--kafka-property` pairs: one that sets a key a flag sets too is an error.
    pub fn properties(&self, overrides: &[(String, String)]) -> Result<Properties, SecurityError> {
        let protocol = self.protocol();
        let mut out = Properties::new();
        if self.protocol.is_some() || protocol != Protocol::Plaintext {
            push(&mut out, "security.protocol", protocol.property());
        }
        self.tls_properties(protocol, &mut out)?;
        self.sasl_properties(protocol, &mut out)?;
        if let Some((key, _)) = overrides
            .iter()
            .find(|(k, _)| out.iter().any(|(o, _)| o == k))
        {
            return Err(SecurityError::SetTwice(key.clone()));
        }
        Ok(out)
    }

    fn protocol(&self) -> Protocol {
        self.protocol
            .unwrap_or(match (self.sasl_mechanism, self.has_tls_files()) {
                (Some(_), _) => Protocol::SaslSsl,
                (None, true) => Protocol::Ssl,
                (None, false) => Protocol::Plaintext,
            })
    }

    fn has_tls_files(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some()
    }

    fn tls_properties(
        &self,
        protocol: Protocol,
        out: &mut Properties,
    ) -> Result<(), SecurityError> {
        if !self.has_tls_files() {
            return Ok(());
        }
        if !protocol.uses_tls() {
            return Err(SecurityError::TlsWithoutTls(protocol.property()));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(SecurityError::HalfAClientCertificate);
        }
        for (key, path, what) in [
            ("ssl.ca.location", &self.tls_ca, "the CA file"),
            (
                "ssl.certificate.location",
                &self.tls_cert,
                "the client certificate",
            ),
            ("ssl.key.location", &self.tls_key, "the client key"),
        ] {
            if let Some(path) = path {
                readable(path, what)?;
                push(out, key, &path.display().to_string());
            }
        }
        Ok(())
    }

    fn sasl_properties(
        &self,
        protocol: Protocol,
        out: &mut Properties,
    ) -> Result<(), SecurityError> {
        let mechanism = match (self.sasl_mechanism, protocol.uses_sasl()) {
            (None, false) => return Ok(()),
            (None, true) => return Err(SecurityError::MechanismMissing(protocol.property())),
            (Some(_), false) => {
                return Err(SecurityError::MechanismWithoutSasl(protocol.property()))
            }
            (Some(mechanism), true) => mechanism,
        };
        push(out, "sasl.mechanism", mechanism.property());
        match mechanism {
            Mechanism::Oauthbearer => self.oidc_properties(out),
            _ => self.password_properties(mechanism, out),
        }
    }

    fn password_properties(
        &self,
        mechanism: Mechanism,
        out: &mut Properties,
    ) -> Result<(), SecurityError> {
        let missing = |missing| SecurityError::CredentialMissing {
            mechanism: mechanism.property(),
            missing,
        };
        let username = self
            .sasl_username
            .as_ref()
            .ok_or(missing("--kafka-sasl-username"))?;
        let password = self.password()?.ok_or(missing(
            "--kafka-sasl-password or --kafka-sasl-password-file",
        ))?;
        push(out, "sasl.username", username);
        push(out, "sasl.password", password.expose());
        Ok(())
    }

    fn password(&self) -> Result<Option<Secret>, SecurityError> {
        let Some(path) = &self.sasl_password_file else {
            return Ok(self.sasl_password.clone());
        };
        let text = std::fs::read_to_string(path).map_err(|e| SecurityError::Unreadable {
            what: "the SASL password file",
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let password = text.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            return Err(SecurityError::EmptyPasswordFile(path.display().to_string()));
        }
        Ok(Some(Secret::new(password)))
    }

    fn oidc_properties(&self, out: &mut Properties) -> Result<(), SecurityError> {
        let missing = |missing| SecurityError::CredentialMissing {
            mechanism: "OAUTHBEARER",
            missing,
        };
        let endpoint = self
            .oauth_token_endpoint
            .as_ref()
            .ok_or(missing("--kafka-oauth-token-endpoint"))?;
        let id = self
            .oauth_client_id
            .as_ref()
            .ok_or(missing("--kafka-oauth-client-id"))?;
        let secret = self
            .oauth_client_secret
            .as_ref()
            .ok_or(missing("--kafka-oauth-client-secret"))?;
        push(out, "sasl.oauthbearer.method", "oidc");
        push(out, "sasl.oauthbearer.token.endpoint.url", endpoint);
        push(out, "sasl.oauthbearer.client.id", id);
        push(out, "sasl.oauthbearer.client.secret", secret.expose());
        if let Some(scope) = &self.oauth_scope {
            push(out, "sasl.oauthbearer.scope", scope);
        }
        Ok(())
    }
}

fn push(out: &mut Properties, key: &str, value: &str) {
    out.push((key.to_owned(), value.to_owned()));
}

/// A file named in a flag is read at start, so that a wrong path is an error naming the flag's
/// file rather than a TLS failure later.
fn readable(path: &std::path::Path, what: &'static str) -> Result<(), SecurityError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| SecurityError::Unreadable {
            what,
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// Whether a librdkafka property holds a secret (passwords, private keys, JAAS and OAUTHBEARER
/// configs), so that its value is never printed.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "oauthbearer.config",
        "key.pem",
        "ssl_key",
    ]
    .iter()
    .any(|s| key.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scram() -> SecurityArgs {
        SecurityArgs {
            sasl_mechanism: Some(Mechanism::ScramSha512),
            sasl_username: Some("svc".into()),
            sasl_password: Some(Secret::new("hunter2")),
            ..SecurityArgs::default()
        }
    }

    fn get<'a>(properties: &'a Properties, key: &str) -> Option<&'a str> {
        properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("autoclaim-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn no_flags_leave_librdkafka_s_defaults() {
        assert_eq!(SecurityArgs::default().properties(&[]), Ok(vec![]));
    }

    #[test]
    fn a_sasl_mechanism_alone_means_sasl_over_tls() {
        let properties = scram().properties(&[]).unwrap();
        assert_eq!(get(&properties, "security.protocol"), Some("sasl_ssl"));
        assert_eq!(get(&properties, "sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(get(&properties, "sasl.username"), Some("svc"));
        assert_eq!(get(&properties, "sasl.password"), Some("hunter2"));
        // Verification stays librdkafka's default (on): no flag turns it off.
        assert_eq!(
            get(&properties, "enable.ssl.certificate.verification"),
            None
        );
    }

    #[test]
    fn tls_files_alone_mean_tls_and_name_their_files() {
        let ca = temp_file("ca.pem", "x");
        let (cert, key) = (temp_file("cert.pem", "x"), temp_file("key.pem", "x"));
        let args = SecurityArgs {
            tls_ca: Some(ca.clone()),
            tls_cert: Some(cert.clone()),
            tls_key: Some(key.clone()),
            ..SecurityArgs::default()
        };
        let properties = args.properties(&[]).unwrap();
        assert_eq!(get(&properties, "security.protocol"), Some("ssl"));
        assert_eq!(get(&properties, "ssl.ca.location"), ca.to_str());
        assert_eq!(get(&properties, "ssl.certificate.location"), cert.to_str());
        assert_eq!(get(&properties, "ssl.key.location"), key.to_str());
    }

    #[test]
    fn combinations_that_cannot_work_are_refused_with_the_flag_to_fix() {
        let cases = [
            (
                SecurityArgs {
                    protocol: Some(Protocol::SaslSsl),
                    ..SecurityArgs::default()
                },
                SecurityError::MechanismMissing("sasl_ssl"),
            ),
            (
                SecurityArgs {
                    protocol: Some(Protocol::Ssl),
                    ..scram()
                },
                SecurityError::MechanismWithoutSasl("ssl"),
            ),
            (
                SecurityArgs {
                    protocol: Some(Protocol::Plaintext),
                    tls_ca: Some("/nonexistent".into()),
                    ..SecurityArgs::default()
                },
                SecurityError::TlsWithoutTls("plaintext"),
            ),
            (
                SecurityArgs {
                    tls_cert: Some("/nonexistent".into()),
                    ..SecurityArgs::default()
                },
                SecurityError::HalfAClientCertificate,
            ),
            (
                SecurityArgs {
                    sasl_password: None,
                    ..scram()
                },
                SecurityError::CredentialMissing {
                    mechanism: "SCRAM-SHA-512",
                    missing: "--kafka-sasl-password or --kafka-sasl-password-file",
                },
            ),
            (
                SecurityArgs {
                    sasl_mechanism: Some(Mechanism::Oauthbearer),
                    oauth_client_id: Some("id".into()),
                    oauth_client_secret: Some(Secret::new("s")),
                    ..SecurityArgs::default()
                },
                SecurityError::CredentialMissing {
                    mechanism: "OAUTHBEARER",
                    missing: "--kafka-oauth-token-endpoint",
                },
            ),
        ];
        for (args, error) in cases {
            assert_eq!(args.properties(&[]), Err(error), "{args:?}");
        }
    }

    #[test]
    fn a_missing_tls_file_is_named() {
        let args = SecurityArgs {
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..SecurityArgs::default()
        };
        let error = args.properties(&[]).unwrap_err().to_string();
        assert!(error.contains("the CA file /nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn a_property_set_by_a_flag_and_by_kafka_property_is_ambiguous() {
        let overrides = vec![("sasl.password".to_owned(), "other".to_owned())];
        assert_eq!(
            scram().properties(&overrides),
            Err(SecurityError::SetTwice("sasl.password".into()))
        );
    }

    #[test]
    fn oauthbearer_uses_librdkafka_s_oidc_client_credentials_flow() {
        let args = SecurityArgs {
            sasl_mechanism: Some(Mechanism::Oauthbearer),
            oauth_token_endpoint: Some("https://idp.example/token".into()),
            oauth_client_id: Some("client".into()),
            oauth_client_secret: Some(Secret::new("s3cret")),
            oauth_scope: Some("kafka".into()),
            ..SecurityArgs::default()
        };
        let properties = args.properties(&[]).unwrap();
        assert_eq!(get(&properties, "sasl.mechanism"), Some("OAUTHBEARER"));
        assert_eq!(get(&properties, "sasl.oauthbearer.method"), Some("oidc"));
        assert_eq!(
            get(&properties, "sasl.oauthbearer.token.endpoint.url"),
            Some("https://idp.example/token")
        );
        assert_eq!(
            get(&properties, "sasl.oauthbearer.client.secret"),
            Some("s3cret")
        );
        assert_eq!(get(&properties, "sasl.oauthbearer.scope"), Some("kafka"));
    }

    #[test]
    fn the_password_file_is_read_without_its_trailing_newline() {
        let file = temp_file("password", "from-file\n");
        let args = SecurityArgs {
            sasl_password: None,
            sasl_password_file: Some(file),
            ..scram()
        };
        let properties = args.properties(&[]).unwrap();
        assert_eq!(get(&properties, "sasl.password"), Some("from-file"));
        let empty = SecurityArgs {
            sasl_password_file: Some(temp_file("empty", "\n")),
            ..args
        };
        assert!(matches!(
            empty.properties(&[]),
            Err(SecurityError::EmptyPasswordFile(_))
        ));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let args = SecurityArgs {
            oauth_client_secret: Some(Secret::new("client-secret-value")),
            ..scram()
        };
        let shown = format!("{args:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("client-secret-value"),
            "{shown}"
        );
        for key in [
            "sasl.password",
            "ssl.key.password",
            "sasl.oauthbearer.client.secret",
            "sasl.jaas.config",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
        ] {
            assert!(is_secret_property(key), "{key}");
        }
        assert!(!is_secret_property("sasl.username"));
        assert!(!is_secret_property("ssl.ca.location"));
    }
}
