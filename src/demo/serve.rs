//! `autoclaim demo --serve`: after the workload the demo keeps the pipeline running, with the admin
//! API and its console, so that a person can open a page and watch autoclaim work. The API is
//! configured as `autoclaim run` configures it, with a development HS256 secret made for this run
//! (never printed; only a token signed with it is), and a trickle of live events keeps the numbers
//! moving until Ctrl-C.
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use crate::admin::cli::{mint, TokenArgs};
use crate::admin::{AdminArgs, AdminService};
use crate::domain::time::Timestamp;
use crate::pipeline::config::{KafkaArgs, Topics};
use crate::pipeline::publish::Publisher;
use crate::pipeline::security::Secret;
use crate::wire::convert::to_wire_timestamp;
use crate::wire::pb::{self, replay_record::Record};

const ISSUER: &str = "https://demo.autoclaim.local";
const AUDIENCE: &str = "autoclaim-admin";
/// Long enough for an afternoon with the demo; a new run makes a new secret anyway.
const TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
/// Live events a second after the workload: enough to see numbers change, few enough to read them.
pub const LIVE_EVENTS_PER_SECOND: u64 = 5;

/// The admin API of the demo and the secret its tokens are signed with.
pub struct DemoAdmin {
    pub service: AdminService,
    secret: String,
}

impl DemoAdmin {
    pub fn start(
        kafka: &KafkaArgs,
        topics: &Topics,
        propagation_delay: Duration,
        transactional_id: &str,
    ) -> anyhow::Result<DemoAdmin> {
        // 64 hex digits of the system's randomness (two v4 UUIDs): a secret of this run only.
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let args = AdminArgs {
            jwks: None,
            jwks_refresh: Duration::from_secs(3600),
            hs256_secret: Some(Secret::new(secret.clone())),
            issuer: Some(ISSUER.into()),
            audience: vec![AUDIENCE.into()],
            max_policies: crate::admin::api::DEFAULT_MAX_POLICIES,
        };
        let service =
            AdminService::start(&args, kafka, topics, propagation_delay, transactional_id)?
                .context("the demo's admin API did not start")?;
        Ok(DemoAdmin { service, secret })
    }

    /// A token for the tenant's Global Administrator, as `autoclaim token` mints it.
    pub fn token(&self, tenant: &str) -> anyhow::Result<String> {
        let (token, _) = mint(&TokenArgs {
            secret: self.secret.clone(),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            tenant: tenant.into(),
            oid: Some("demo-admin".into()),
            name: Some("Demo administrator".into()),
            roles: vec!["global-administrator".into()],
            no_roles: false,
            ttl: TOKEN_TTL,
        })?;
        Ok(token)
    }
}

/// How often the demo says how far the pipeline has got while live events flow.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Publishes the workload's further events, each stamped with the time it is sent, until `stop`;
/// calls `status` with the count sent every few seconds.
pub fn live_events(
    publisher: &Publisher,
    events: impl Iterator<Item = pb::ActivityEvent>,
    stop: &AtomicBool,
    status: &mut dyn FnMut(u64) -> std::io::Result<()>,
) -> anyhow::Result<u64> {
    let pause = Duration::from_millis(1000 / LIVE_EVENTS_PER_SECOND);
    let mut sent = 0;
    let mut last_status = std::time::Instant::now();
    for mut event in events {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // Live: the event happens now, so it is decided under the policies in force now and
        // shows in the report's past day.
        event.occurred_at = Some(to_wire_timestamp(Timestamp::now()));
        event.event_id = format!("live-{}", event.event_id);
        publisher.send(&pb::ReplayRecord {
            record: Some(Record::Activity(event)),
            written_at: None,
        })?;
        publisher.flush(Duration::from_secs(10))?;
        sent += 1;
        if last_status.elapsed() >= STATUS_EVERY {
            status(sent)?;
            last_status = std::time::Instant::now();
        }
        std::thread::sleep(pause);
    }
    Ok(sent)
}
