//! State the engine reads: global tables (settings, policies, inventory) and per-partition state
//! (directory rows, own assignments, seat usage), and the one place where a decision is made and
//! recorded, shared by `replay` and the Kafka pipeline.
pub mod partition;
pub mod tables;

use crate::domain::activity::Activity;
use crate::domain::catalog::ProductId;
use crate::domain::decision::{decide, Decision, Outcome, OwnGrants, StateView};
use crate::domain::directory::UserRow;
use crate::domain::policy::Policy;
use crate::domain::seats;
use crate::domain::settings::TenantSettings;
use crate::domain::time::Timestamp;

pub use partition::PartitionState;
pub use tables::Tables;

/// The engine's view: the global tables and the state of the partition the event came from.
pub struct View<'a> {
    pub tables: &'a Tables,
    pub partition: &'a PartitionState,
}

impl StateView for View<'_> {
    fn settings_in_force(&self, tenant: &str, at: Timestamp) -> Option<&TenantSettings> {
        self.tables.settings_in_force(tenant, at)
    }

    fn active_policies<'a>(
        &'a self,
        tenant: &'a str,
        at: Timestamp,
    ) -> impl Iterator<Item = &'a Policy> + 'a {
        self.tables.active_policies(tenant, at)
    }

    fn directory_user(&self, tenant: &str, user: &str) -> Option<&UserRow> {
        self.partition.directory_user(tenant, user)
    }

    fn own_grants(&self, tenant: &str, user: &str) -> OwnGrants {
        self.partition.own_grants(tenant, user)
    }

    fn inventory_as_of(&self, tenant: &str, product: ProductId) -> Option<Timestamp> {
        self.tables.inventory(tenant, product).map(|i| i.as_of)
    }

    fn seats_available(&self, tenant: &str, product: ProductId) -> u64 {
        seats::available(
            self.tables.inventory(tenant, product),
            self.partition.seat_usage(tenant, product),
        )
    }
}

/// Decides one event and records an assignment in the partition's state, so that the next event
/// sees it. The only way the pipeline and replay change state in response to activity.
pub fn process(tables: &Tables, partition: &mut PartitionState, event: &Activity) -> Decision {
    let decision = decide(
        &View {
            tables,
            partition: &*partition,
        },
        event,
    );
    if let Outcome::Assigned(a) = &decision.outcome {
        partition.record_assignment(
            &decision.tenant_id,
            &decision.subject_user_id,
            a.product,
            a.counts_from,
        );
    }
    decision
}
