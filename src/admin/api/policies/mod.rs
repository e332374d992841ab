//! `/v1/tenants/{tenant}/policies[/{policy}]`: the tenant's policies as an admin sees them (status,
//! licences available, whether they assign now), listed and read here; created, changed and
//! deleted in [`write`], from bodies checked in [`body`].
mod body;
mod write;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pbjson_types::Timestamp as WireTimestamp;
use serde::Serialize;

use super::extract::{Admitted, PolicyId};
use super::AdminState;
use crate::admin::feature::{feature, Feature};
use crate::admin::problem::Problem;
use crate::admin::view::{policy_to_pb, AdminView, PolicyState, Status};
use crate::domain::catalog::{Catalog, ProductId};
use crate::domain::time::Timestamp;
use crate::wire::convert::to_wire_timestamp;
use crate::wire::pb;
pub(super) use write::{create_policy, delete_policy, patch_policy};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductSeats {
    pub product: &'static str,
    pub display_name: &'static str,
    pub sku_part_number: &'static str,
    /// Inventory available minus this processor's assignments since the inventory snapshot.
    pub available_licenses: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// The newest version of the policy, in force or not.
    pub policy: pb::Policy,
    /// PROPAGATING while the newest version waits for the propagation delay, else ACTIVE or OFF.
    pub status: &'static str,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire::timestamp::serialize_option"
    )]
    pub propagating_until: Option<WireTimestamp>,
    /// When the newest version takes (or took) effect: its changedAt plus the propagation delay.
    #[serde(serialize_with = "crate::wire::timestamp::serialize")]
    pub effective_at: WireTimestamp,
    /// The app the admin center shows for the policy's primary product.
    pub autoclaim_app: &'static str,
    /// Display name of the primary product.
    pub assigned_product: &'static str,
    /// Licences of the primary product still available.
    pub available_licenses: u64,
    /// The primary product then the backups, in order, with the licences available of each.
    pub products: Vec<ProductSeats>,
    /// Whether the policy assigns licences now: ACTIVE, and the tenant's autoclaim setting in force
    /// is on.
    pub assigning_licenses: bool,
    /// Set when the tenant's autoclaim setting keeps (or will keep) the policy from assigning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyList {
    pub tenant_id: String,
    /// The tenant's autoclaim setting in force is on.
    pub autoclaim_on: bool,
    /// Set when autoclaim is off, or a pending setting turns it on or off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    pub policies: Vec<PolicyView>,
}

fn policy_view(
    view: &AdminView,
    tenant: &str,
    state: &PolicyState<'_>,
    feature: &Feature,
) -> PolicyView {
    let primary = Catalog::product(state.latest.primary());
    let seats = |p: ProductId| {
        let product = Catalog::product(p);
        ProductSeats {
            product: product.key,
            display_name: product.display_name,
            sku_part_number: product.sku_part_number,
            available_licenses: view.available(tenant, p),
        }
    };
    PolicyView {
        policy: policy_to_pb(tenant, state.latest),
        status: state.status.name(),
        propagating_until: state.status.until().map(to_wire_timestamp),
        effective_at: to_wire_timestamp(state.effective_at),
        autoclaim_app: primary.autoclaim_app,
        assigned_product: primary.display_name,
        available_licenses: view.available(tenant, state.latest.primary()),
        products: state
            .latest
            .chain
            .iter()
            .map(|l| seats(l.product))
            .collect(),
        assigning_licenses: feature.on && state.status == Status::Active,
        notice: feature.notice.clone(),
    }
}

/// One policy as an admin sees it; 404 when unknown or when its deletion is in force.
fn one_policy(
    view: &AdminView,
    tenant: &str,
    id: &str,
    now: Timestamp,
) -> Result<Response, Problem> {
    let state = view
        .policy_state(tenant, id, now)
        .ok_or_else(|| Problem::not_found("no such policy in this tenant"))?;
    let feature = feature(view, tenant, now);
    Ok(Json(policy_view(view, tenant, &state, &feature)).into_response())
}

pub(super) async fn list_policies(
    State(s): State<AdminState>,
    Admitted { tenant, .. }: Admitted,
) -> Json<PolicyList> {
    let view = s.view().read();
    let now = Timestamp::now();
    let feature = feature(&view, &tenant, now);
    let policies = view
        .policies(&tenant, now)
        .iter()
        .map(|state| policy_view(&view, &tenant, state, &feature))
        .collect();
    Json(PolicyList {
        tenant_id: tenant,
        autoclaim_on: feature.on,
        notice: feature.notice,
        policies,
    })
}

pub(super) async fn get_policy(
    State(s): State<AdminState>,
    Admitted {
        tenant,
        path: PolicyId(id),
        ..
    }: Admitted<PolicyId>,
) -> Result<Response, Problem> {
    let view = s.view().read();
    one_policy(&view, &tenant, &id, Timestamp::now())
}
