//! The state of one input partition: for each of its tenants, the directory rows of their users, what
//! this processor assigned to whom, and the seats it used. Rebuilt from the directory and the
//! assignments changelog when the partition is assigned to an instance.
use std::collections::HashMap;

use super::claims::TenantClaims;
use super::id_map::{IdKey, IdMap};
use crate::domain::catalog::{Capabilities, Catalog, ProductId, ProductSet};
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
    /// When each own grant that the directory has not yet reflected was assigned. Kept beside the
    /// users rather than in their entries: few users have one, and every user has an entry.
    unreflected_since: IdMap<Vec<(ProductId, Timestamp)>>,
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

fn capabilities_of(products: ProductSet) -> Capabilities {
    products.iter().fold(Capabilities::NONE, |caps, product| {
        caps.union(Catalog::product(product).capabilities())
    })
}

#[derive(Debug, Default)]
pub struct PartitionState {
    tenants: IdMap<TenantState>,
    /// Tenants with pending claims or notices sent, looked up once per event like the tenants.
    claims: IdMap<TenantClaims>,
}

impl PartitionState {
    /// The tenant's share, if the partition holds anything of it.
    pub fn tenant(&self, tenant: &str) -> Option<&TenantState> {
        self.tenants.get(tenant)
    }

    pub(super) fn tenant_by_key(&self, tenant: IdKey<'_>) -> Option<&TenantState> {
        self.tenants.get_by_key(tenant)
    }

    /// A directory row. Own grants that it reflects (it shows the product and was taken at or after
    /// the assignment) stop counting: from then on the directory alone decides, so a licence removed
    /// by an administrator is needed again rather than taken as held.
    pub fn upsert_directory_user(&mut self, tenant: &str, user: &str, row: UserRow) {
        self.mark_if_waiting(tenant, user, row.as_of);
        let tenant = self.tenants.get_or_default(tenant);
        let entry = tenant.users.get_or_default(user);
        entry.directory = Some(row);
        if entry.own.products.intersection(row.holds).is_empty() {
            return;
        }
        let Some(since) = tenant.unreflected_since.get_mut(user) else {
            return;
        };
        since.retain(|(product, assigned_at)| {
            let reflected = row.holds.contains(*product) && row.as_of >= *assigned_at;
            if reflected {
                entry.own.products.remove(*product);
                entry.own.reflected.insert(*product);
            }
            !reflected
        });
        entry.own.capabilities = capabilities_of(entry.own.products);
        if since.is_empty() {
            tenant.unreflected_since.remove(user);
        }
    }

    /// A waiting user's row changed: their claims are decided again (they may be entitled now, or
    /// no longer eligible).
    fn mark_if_waiting(&mut self, tenant: &str, user: &str, at: Timestamp) {
        if let Some(claims) = self.claims.get_mut(tenant) {
            if claims.has_user(user) {
                claims.dirty_at = Some(claims.dirty_at.map_or(at, |d| d.max(at)));
            }
        }
    }

    pub fn claims(&self, tenant: &str) -> Option<&TenantClaims> {
        self.claims.get(tenant)
    }

    pub fn claims_mut_if_any(&mut self, tenant: &str) -> Option<&mut TenantClaims> {
        self.claims.get_mut(tenant)
    }

    pub fn claims_mut(&mut self, tenant: &str) -> &mut TenantClaims {
        let claims = self.claims.get_or_default(tenant);
        claims.name_tenant(tenant);
        claims
    }

    /// Tenants with pending claims.
    pub fn tenants_waiting(&self) -> impl Iterator<Item = (&str, &TenantClaims)> {
        self.claims
            .values()
            .filter(|c| !c.is_empty())
            .map(|c| (c.tenant(), c))
    }

    /// Pending claims in the partition.
    pub fn pending_claims(&self) -> usize {
        self.claims.values().map(TenantClaims::len).sum()
    }

    /// A directory tombstone: the user is gone (what this processor assigned is remembered).
    pub fn delete_directory_user(&mut self, tenant: &str, user: &str) {
        // A tombstone has no time of its own: the tenant's time stands for it.
        if let Some(at) = self.claims(tenant).and_then(|c| c.time()) {
            self.mark_if_waiting(tenant, user, at);
        }
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
        let since = tenant.unreflected_since.get_or_default(user);
        let own = &mut tenant.users.get_or_default(user).own;
        match since.iter_mut().find(|(p, _)| *p == product) {
            // Already known: reading the same changelog record twice changes nothing.
            Some((_, assigned_at)) if *assigned_at == at => return,
            // A second assignment: the directory reflected and then lost the first one (a restore
            // reads the changelog before the directory rows that show this).
            Some((_, assigned_at)) => {
                *assigned_at = (*assigned_at).max(at);
                own.reflected.insert(product);
            }
            None => since.push((product, at)),
        }
        own.products.insert(product);
        own.capabilities = capabilities_of(own.products);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn per_user() -> ProductId {
        Catalog::by_key("power_automate_per_user").unwrap()
    }

    fn row(as_of: i64, holds_per_user: bool) -> UserRow {
        let mut holds = ProductSet::default();
        if holds_per_user {
            holds.insert(per_user());
        }
        UserRow {
            capabilities: Capabilities::NONE,
            holds,
            account_enabled: true,
            guest: false,
            has_usage_location: true,
            as_of: Timestamp::from_millis(as_of),
        }
    }

    fn own_products(state: &PartitionState) -> Vec<ProductId> {
        state.own_grants("t", "u").products.iter().collect()
    }

    #[test]
    fn a_restore_reads_the_changelog_first_and_reflection_still_needs_a_later_row() {
        // The changelog (assigned at 100, then again at 300 after a removal) is applied before any
        // directory row, as a restore does: the row at 200 reflects only the first assignment.
        let mut state = PartitionState::default();
        state.record_assignment("t", "u", per_user(), Timestamp::from_millis(100));
        state.record_assignment("t", "u", per_user(), Timestamp::from_millis(300));
        state.upsert_directory_user("t", "u", row(200, true));
        state.upsert_directory_user("t", "u", row(250, false));
        assert_eq!(own_products(&state), vec![per_user()]);
        let usage = state.seat_usage("t", per_user()).unwrap();
        assert_eq!(usage.after(Timestamp::from_millis(0)), 2);
        state.upsert_directory_user("t", "u", row(300, true));
        assert!(own_products(&state).is_empty());
        assert_eq!(state.own_grants("t", "u").capabilities, Capabilities::NONE);
    }

    #[test]
    fn the_same_changelog_record_twice_counts_once() {
        let mut state = PartitionState::default();
        for _ in 0..2 {
            state.record_assignment("t", "u", per_user(), Timestamp::from_millis(100));
        }
        let usage = state.seat_usage("t", per_user()).unwrap();
        assert_eq!(usage.after(Timestamp::from_millis(0)), 1);
    }
}
