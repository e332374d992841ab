//! `GET /v1/catalog`: the products a policy may name and their service plans, read-only. The
//! console's "Add a policy" steps offer exactly these (primary, backups, apps to exclude), so it
//! never carries a copy of the catalog that an operator's `--catalog` file would make stale.
//!
//! The catalog is the same for every tenant, so the path has no tenant; the token is checked as
//! everywhere else (401), and only a Global Administrator may read it (403), like every admin route.
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::api::{check_query, AdminState, NO_PARAMETERS};
use super::problem::Problem;
use crate::domain::catalog::Catalog;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogList {
    pub products: Vec<CatalogProduct>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogProduct {
    /// The key policies name the product by.
    pub key: &'static str,
    pub display_name: &'static str,
    /// The app the admin center shows for a policy of this product.
    pub autoclaim_app: &'static str,
    pub sku_part_number: &'static str,
    pub plans: Vec<CatalogPlan>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogPlan {
    pub name: &'static str,
    pub id: &'static str,
    /// The capabilities the plan grants (`premium_cloud_flows`, `attended_rpa`); a policy may not
    /// exclude a plan that grants its product's capability.
    pub grants: Vec<&'static str>,
}

/// The catalog as the API lists it, in catalog order (built-ins first).
pub fn list() -> CatalogList {
    let products = Catalog::products()
        .map(|(_, p)| CatalogProduct {
            key: p.key,
            display_name: p.display_name,
            autoclaim_app: p.autoclaim_app,
            sku_part_number: p.sku_part_number,
            plans: p
                .plans
                .iter()
                .map(|plan| CatalogPlan {
                    name: plan.name,
                    id: plan.id,
                    grants: crate::domain::catalog::Capabilities::NAMED
                        .iter()
                        .filter(|(_, caps)| plan.grants.contains(*caps))
                        .map(|(name, _)| *name)
                        .collect(),
                })
                .collect(),
        })
        .collect();
    CatalogList { products }
}

pub async fn get_catalog(
    State(s): State<AdminState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, Problem> {
    let principal = s
        .authenticator()
        .authenticate(headers.get(AUTHORIZATION))
        .await?;
    if !principal.is_global_administrator() {
        return Err(Problem::forbidden(
            "only a Global Administrator may read the catalog",
        ));
    }
    check_query(&uri, NO_PARAMETERS)?;
    Ok(Json(list()).into_response())
}
