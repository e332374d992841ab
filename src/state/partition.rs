//! The state of one input partition: for each of its tenants, the directory rows of their users, what
//! this processor assigned to whom, and the seats it used. Rebuilt from the directory and the
//! assignments changelog when the partition is assigned to an instance.
use std::collections::HashMap;

use super::id_map::{IdKey, IdMap};
use crate::domain::catalog::{Catalog, ProductId};
use crate::domain::decision::{OwnGrants, Subject};
use crate::domain::directory::UserRow;
use crate::domain::seats::SeatUsage;
use crate::domain::time::Timestamp;

/// Everything known about one user, so that one lookup answers a decision's questions about them.
#[derive(Debug, Default)]
struct UserEntry {
    directory: Option<UserRow>,
    own: OwnGrants,
}

/// One tenant's share of the partition.
#[derive(Debug, Default)]
pub struct TenantState {
    users: IdMap<UserEntry>,
    seat_usage: HashMap<ProductId, SeatUsage>,
}

impl TenantState {
    /// The user's directory row and this processor's grants to them.
    pub fn subject(&self, user: &str) -> Subject {
        self.users
            .get(user)
            .map_or_else(Subject::default, |e| Subject {
                row: e.directory,
                own: e.own,
            })
    }

    pub fn seat_usage(&self, product: ProductId) -> Option<&SeatUsage> {
        self.seat_usage.get(&product)
    }
}

#[derive(Debug, Default)]
pub struct PartitionState {
    tenants: IdMap<TenantState>,
}

impl PartitionState {
    /// The tenant's share, if the partition holds anything of it.
    pub fn tenant(&self, tenant: &str) -> Option<&TenantState> {
        self.tenants.get(tenant)
    }

    pub(super) fn tenant_by_key(&self, tenant: IdKey<'_>) -> Option<&TenantState> {
        self.tenants.get_by_key(tenant)
    }

    fn user_mut(&mut self, tenant: &str, user: &str) -> &mut UserEntry {
        self.tenants
            .get_or_default(tenant)
            .users
            .get_or_default(user)
    }

    pub fn upsert_directory_user(&mut self, tenant: &str, user: &str, row: UserRow) {
        self.user_mut(tenant, user).directory = Some(row);
    }

    /// A directory tombstone: the user is gone (what this processor assigned is remembered).
    pub fn delete_directory_user(&mut self, tenant: &str, user: &str) {
        let Some(t) = self.tenants.get_mut(tenant) else {
            return;
        };
        if let Some(entry) = t.users.get_mut(user) {
            entry.directory = None;
            if entry.own == OwnGrants::default() {
                t.users.remove(user);
            }
        }
    }

    /// Records an assignment made by this processor (live, or read back from the changelog).
    pub fn record_assignment(
        &mut self,
        tenant: &str,
        user: &str,
        product: ProductId,
        at: Timestamp,
    ) {
        let tenant = self.tenants.get_or_default(tenant);
        let own = &mut tenant.users.get_or_default(user).own;
        if own.products.contains(product) {
            return; // already known: reading the changelog twice changes nothing
        }
        own.products.insert(product);
        own.capabilities = own
            .capabilities
            .union(Catalog::product(product).capabilities());
        tenant.seat_usage.entry(product).or_default().record(at);
    }

    pub fn directory_user(&self, tenant: &str, user: &str) -> Option<UserRow> {
        self.tenant(tenant)?.subject(user).row
    }

    pub fn own_grants(&self, tenant: &str, user: &str) -> OwnGrants {
        self.tenant(tenant)
            .map_or_else(OwnGrants::default, |t| t.subject(user).own)
    }

    pub fn seat_usage(&self, tenant: &str, product: ProductId) -> Option<&SeatUsage> {
        self.tenant(tenant)?.seat_usage(product)
    }

    /// Number of users tracked (directory rows or own assignments).
    pub fn tracked_users(&self) -> usize {
        self.tenants.values().map(|t| t.users.len()).sum()
    }
}
