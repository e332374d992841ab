//! The state of one input partition: for each of its tenants, the directory rows of their users, what
//! this processor assigned to whom, and the seats it used. Rebuilt from the directory and the
//! assignments changelog when the partition is assigned to an instance.
use std::collections::HashMap;

use crate::domain::catalog::{Catalog, ProductId};
use crate::domain::decision::OwnGrants;
use crate::domain::directory::UserRow;
use crate::domain::seats::SeatUsage;
use crate::domain::time::Timestamp;

#[derive(Debug, Default)]
struct UserEntry {
    directory: Option<UserRow>,
    own: OwnGrants,
}

#[derive(Debug, Default)]
struct TenantState {
    users: HashMap<Box<str>, UserEntry>,
    seat_usage: HashMap<ProductId, SeatUsage>,
}

#[derive(Debug, Default)]
pub struct PartitionState {
    tenants: HashMap<Box<str>, TenantState>,
}

impl PartitionState {
    fn tenant_mut(&mut self, tenant: &str) -> &mut TenantState {
        if !self.tenants.contains_key(tenant) {
            self.tenants.insert(tenant.into(), TenantState::default());
        }
        self.tenants.get_mut(tenant).expect("inserted above")
    }

    fn user_mut(&mut self, tenant: &str, user: &str) -> &mut UserEntry {
        let users = &mut self.tenant_mut(tenant).users;
        if !users.contains_key(user) {
            users.insert(user.into(), UserEntry::default());
        }
        users.get_mut(user).expect("inserted above")
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
        let entry = self.user_mut(tenant, user);
        if entry.own.products.contains(product) {
            return; // already known: reading the changelog twice changes nothing
        }
        entry.own.products.insert(product);
        entry.own.capabilities = entry
            .own
            .capabilities
            .union(Catalog::product(product).capabilities());
        self.tenant_mut(tenant)
            .seat_usage
            .entry(product)
            .or_default()
            .record(at);
    }

    pub fn directory_user(&self, tenant: &str, user: &str) -> Option<&UserRow> {
        self.tenants
            .get(tenant)?
            .users
            .get(user)?
            .directory
            .as_ref()
    }

    pub fn own_grants(&self, tenant: &str, user: &str) -> OwnGrants {
        self.tenants
            .get(tenant)
            .and_then(|t| t.users.get(user))
            .map_or_else(OwnGrants::default, |e| e.own)
    }

    pub fn seat_usage(&self, tenant: &str, product: ProductId) -> Option<&SeatUsage> {
        self.tenants.get(tenant)?.seat_usage.get(&product)
    }

    /// Number of users tracked (directory rows or own assignments).
    pub fn tracked_users(&self) -> usize {
        self.tenants.values().map(|t| t.users.len()).sum()
    }
}
