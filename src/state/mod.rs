//! State the engine reads: global tables (settings, policies, inventory) and per-partition state
//! (directory rows, own assignments, seat usage, pending claims), and the one place where a decision
//! is made and recorded (`claiming`), shared by `replay` and the Kafka pipeline.
mod claiming;
pub mod claims;
mod id_map;
pub mod partition;
pub mod tables;

use std::time::Duration;

use crate::domain::catalog::ProductId;
use crate::domain::decision::{StateView, Subject};
use crate::domain::policy::Policy;
use crate::domain::seats;
use crate::domain::settings::TenantSettings;
use crate::domain::time::Timestamp;
use id_map::IdKey;

pub use claiming::{
    decide_and_record, redecide_if_due, redecide_tenant, redecide_waiting, Decided, Redecided,
};
pub use partition::{PartitionState, TenantState};
pub use tables::{Tables, TenantTables};

/// The engine's view of one tenant: its global tables and its share of the partition the event came
/// from, each found once per event.
pub struct TenantView<'a> {
    delay: Duration,
    tables: Option<&'a TenantTables>,
    partition: Option<&'a TenantState>,
}

impl<'a> TenantView<'a> {
    pub fn new(tables: &'a Tables, partition: &'a PartitionState, tenant: &str) -> Self {
        let tenant = IdKey::of(tenant);
        TenantView {
            delay: tables.propagation_delay(),
            tables: tables.tenant_by_key(tenant),
            partition: partition.tenant_by_key(tenant),
        }
    }
}

impl StateView for TenantView<'_> {
    fn settings_in_force(&self, at: Timestamp) -> Option<&TenantSettings> {
        self.tables?.settings_in_force(at, self.delay)
    }

    fn active_policies(&self, at: Timestamp) -> impl Iterator<Item = &Policy> {
        let delay = self.delay;
        self.tables
            .into_iter()
            .flat_map(move |t| t.active_policies(at, delay))
    }

    fn subject(&self, user: &str) -> Subject {
        self.partition
            .map_or_else(Subject::default, |p| p.subject(user))
    }

    fn inventory_as_of(&self, product: ProductId) -> Option<Timestamp> {
        self.tables?.inventory(product).map(|i| i.as_of)
    }

    fn seats_available(&self, product: ProductId) -> u64 {
        seats::available(
            self.tables.and_then(|t| t.inventory(product)),
            self.partition.and_then(|p| p.seat_usage(product)),
        )
    }
}
