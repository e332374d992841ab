//! Whether a tenant's autoclaim setting lets its policies assign licences, as an admin is told it.
//! A policy can be ACTIVE while the setting in force is off; listing it as ACTIVE without saying so
//! would tell the admin that licences are being assigned when none are.
use super::view::{AdminView, Status};
use crate::domain::time::Timestamp;

/// The tenant's autoclaim setting as it bears on its policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feature {
    /// The setting in force now turns autoclaim on: ACTIVE policies assign licences.
    pub on: bool,
    /// What an admin must know: autoclaim is off, or a pending change turns it on or off.
    pub notice: Option<String>,
}

pub fn feature(view: &AdminView, tenant: &str, now: Timestamp) -> Feature {
    let on = view
        .settings_in_force(tenant, now)
        .is_some_and(|v| v.settings.autoclaim_enabled);
    let pending_on = view
        .latest_settings(tenant)
        .map(|v| v.settings.autoclaim_enabled);
    let until = match view.settings_status(tenant, now) {
        Status::Propagating { until } => Some(until),
        _ => None,
    };
    let notice = match (on, until, pending_on) {
        (false, Some(until), Some(true)) => Some(format!(
            "autoclaim is off for this tenant until {until}, when the setting that turns it on \
             takes effect; until then no policy assigns licences"
        )),
        (false, _, _) => Some(format!(
            "autoclaim is off for this tenant: no policy assigns licences until the autoclaim \
             setting is turned on (PUT /v1/tenants/{tenant}/settings) and has propagated"
        )),
        (true, Some(until), Some(false)) => Some(format!(
            "autoclaim turns off for this tenant at {until}; from then no policy assigns licences"
        )),
        (true, _, _) => None,
    };
    Feature { on, notice }
}
