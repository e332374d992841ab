//! The decision engine: a pure function of a state view, an event and the event's time.
//!
//! Rules, in order (design section 2.5): autoclaim off; nothing required; out of scope; already
//! entitled; not eligible; candidate policies by narrowest sufficient product then creation time, each
//! chain walked in order to the first product with a seat.
use std::time::Duration;

use super::activity::{Activity, ActivityKind};
use super::catalog::{Capabilities, Catalog, PlanIndex, ProductId, ProductSet};
use super::directory::UserRow;
use super::policy::{ChainLink, Policy};
use super::settings::{Scope, TenantSettings};
use super::time::Timestamp;

/// What the engine may read about the event's tenant. Implementations answer as of the event's time,
/// so a decision depends only on the input that came before it. Scoped to one tenant so that an
/// implementation finds the tenant once per event, not once per question.
pub trait StateView {
    /// The tenant's settings in force at `at`.
    fn settings_in_force(&self, at: Timestamp) -> Option<&TenantSettings>;
    /// The tenant's policies whose version in force at `at` is enabled and not deleted.
    fn active_policies(&self, at: Timestamp) -> impl Iterator<Item = &Policy>;
    /// What is known about a user of the tenant: the directory's row and this processor's grants.
    fn subject(&self, user: &str) -> Subject;
    /// Seats of the product the tenant can still assign.
    fn seats_available(&self, product: ProductId) -> u64;
    /// When the tenant's inventory snapshot of the product was taken, if there is one.
    fn inventory_as_of(&self, product: ProductId) -> Option<Timestamp>;
}

/// A user as the engine sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// The directory's row for the user, if the directory knows the user.
    pub row: Option<UserRow>,
    /// What this processor has assigned to the user (products, and what they grant).
    pub own: OwnGrants,
}

/// Products this processor assigned to one user that the directory has not yet shown, and the
/// capabilities they grant. They count towards the user's entitlement until the directory reflects
/// them (from then on the directory alone decides), which is what makes a product assigned at most
/// once while the directory catches up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnGrants {
    pub products: ProductSet,
    pub capabilities: Capabilities,
    /// Products this processor assigned before that the directory has since shown: assigning one
    /// again (after an administrator removed it) is a new assignment with an id of its own.
    pub reflected: ProductSet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ineligibility {
    AccountDisabled,
    Guest,
    UnknownUser,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    NoLicensesAvailable,
    UsageLocationMissing,
    /// Every product that could grant the need is one the user already holds with the granting plan
    /// disabled. Assigning it again would re-enable a plan that an administrator turned off.
    GrantingPlanDisabled,
}

/// A licence to assign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub product: ProductId,
    pub disabled_plans: Vec<PlanIndex>,
    pub grants: Capabilities,
    pub policy_id: String,
    pub policy_name: String,
    /// Whether this processor assigned the product to the user before (the directory showed it, then
    /// lost it).
    pub reassigned: bool,
    /// From when the assignment counts against seats: the event's time, or just after the inventory
    /// snapshot it was checked against if that is later. A snapshot taken after this time includes
    /// the assignment; one taken before does not, whatever the event's own time.
    pub counts_from: Timestamp,
}

/// A claim that was due but could not be fulfilled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: FailureReason,
    /// The product the claim was for, when a policy was consulted.
    pub product: Option<ProductId>,
    pub policy_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Assigned(Assignment),
    AlreadyEntitled,
    NotRequired,
    OutOfScope,
    AutoclaimOff,
    NoPolicy,
    NotEligible(Ineligibility),
    Failed(Failure),
}

/// The decision for one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub event_id: String,
    pub tenant_id: String,
    pub subject_user_id: String,
    pub trigger_kind: ActivityKind,
    pub occurred_at: Timestamp,
    pub outcome: Outcome,
    /// When the user's claim for this need first waited for a seat, if it did: set on an assignment
    /// that fulfils a pending claim and on a refusal that leaves one pending (by `state`, which
    /// keeps the claims; the engine leaves it empty).
    pub pending_since: Option<Timestamp>,
}

/// Decides what the event calls for. Pure: all it reads is `view` (the state of the event's tenant)
/// and `event`.
pub fn decide(view: &impl StateView, event: &Activity) -> Decision {
    let subject = event.licence_subject();
    Decision {
        event_id: event.event_id.clone(),
        tenant_id: event.tenant_id.clone(),
        subject_user_id: subject.to_owned(),
        trigger_kind: event.kind,
        occurred_at: event.occurred_at,
        outcome: outcome(view, event, subject),
        pending_since: None,
    }
}

fn outcome(view: &impl StateView, event: &Activity, subject: &str) -> Outcome {
    let at = event.occurred_at;
    let settings = match view.settings_in_force(at) {
        Some(s) if s.autoclaim_enabled => s,
        _ => return Outcome::AutoclaimOff,
    };
    let needed = event.required_capabilities();
    if needed.is_empty() {
        return Outcome::NotRequired;
    }
    if settings.scope == Scope::ManagedEnvironmentsOnly
        && event.kind.is_cloud_flow()
        && !event.in_managed_environment()
    {
        return Outcome::OutOfScope;
    }

    let Subject { row: user, own } = view.subject(subject);
    let has = user
        .map_or(Capabilities::NONE, |u| u.capabilities)
        .union(own.capabilities);
    if has.contains(needed) {
        return Outcome::AlreadyEntitled;
    }

    let Some(user) = user else {
        return Outcome::NotEligible(Ineligibility::UnknownUser);
    };
    if !user.account_enabled {
        return Outcome::NotEligible(Ineligibility::AccountDisabled);
    }
    if user.guest {
        return Outcome::NotEligible(Ineligibility::Guest);
    }
    if !user.has_usage_location {
        return Outcome::Failed(Failure {
            reason: FailureReason::UsageLocationMissing,
            product: None,
            policy_id: None,
        });
    }

    // A product the user holds is never assigned again, whatever its plans: that would overwrite the
    // plans someone else chose.
    let held = user.holds.union(own.products);
    let choice = choose_product(view, at, has, needed, held);
    match choice {
        Outcome::Assigned(mut a) => {
            a.reassigned = own.reflected.contains(a.product);
            Outcome::Assigned(a)
        }
        other => other,
    }
}

/// Step 6: the candidate policies, narrowest assignable product first, then oldest; the first product
/// of the first chain with a seat wins. A product is assignable if it makes the user sufficient and
/// the user does not hold it already.
fn choose_product(
    view: &impl StateView,
    at: Timestamp,
    has: Capabilities,
    needed: Capabilities,
    held: ProductSet,
) -> Outcome {
    let sufficient = |link: &ChainLink| has.union(link.grants).contains(needed);
    let assignable = |link: &ChainLink| sufficient(link) && !held.contains(link.product);
    let mut candidates: Vec<(u32, Timestamp, &str, &Policy)> = view
        .active_policies(at)
        .filter_map(|policy| {
            let narrowest = narrowest(policy, assignable)?;
            Some((
                narrowest.0,
                policy.created_at,
                policy.policy_id.as_str(),
                policy,
            ))
        })
        .collect();
    if candidates.is_empty() {
        return blocked_by_held_product(view, at, sufficient);
    }
    candidates.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));

    for (_, _, _, policy) in &candidates {
        for link in policy.chain.iter().filter(|link| assignable(link)) {
            if view.seats_available(link.product) > 0 {
                return Outcome::Assigned(assignment(view, at, policy, link));
            }
        }
    }
    let first = candidates[0].3;
    Outcome::Failed(Failure {
        reason: FailureReason::NoLicensesAvailable,
        // What the claim was for: the first candidate's narrowest assignable product.
        product: narrowest(first, assignable).map(|(_, link)| link.product),
        policy_id: Some(first.policy_id.clone()),
    })
}

/// The policy's narrowest link that `usable` accepts, with its breadth (capabilities granted).
fn narrowest(policy: &Policy, usable: impl Fn(&ChainLink) -> bool) -> Option<(u32, &ChainLink)> {
    policy
        .chain
        .iter()
        .filter(|link| usable(link))
        .map(|link| (Catalog::product(link.product).capabilities().count(), link))
        .min_by_key(|(breadth, _)| *breadth)
}

/// No policy has a product left to assign: if one would have granted the need with a product the user
/// holds (its granting plan disabled), that is what the administrator must hear about.
fn blocked_by_held_product(
    view: &impl StateView,
    at: Timestamp,
    sufficient: impl Fn(&ChainLink) -> bool,
) -> Outcome {
    let mut blocked: Vec<(u32, Timestamp, &str, ProductId)> = view
        .active_policies(at)
        .filter_map(|policy| {
            let (breadth, link) = narrowest(policy, &sufficient)?;
            Some((
                breadth,
                policy.created_at,
                policy.policy_id.as_str(),
                link.product,
            ))
        })
        .collect();
    blocked.sort_unstable();
    match blocked.first() {
        Some((_, _, policy_id, product)) => Outcome::Failed(Failure {
            reason: FailureReason::GrantingPlanDisabled,
            product: Some(*product),
            policy_id: Some((*policy_id).to_owned()),
        }),
        None => Outcome::NoPolicy,
    }
}

fn assignment(
    view: &impl StateView,
    at: Timestamp,
    policy: &Policy,
    link: &ChainLink,
) -> Assignment {
    let after_snapshot = view
        .inventory_as_of(link.product)
        .map_or(at, |as_of| as_of.saturating_add(Duration::from_millis(1)));
    Assignment {
        counts_from: at.max(after_snapshot),
        product: link.product,
        disabled_plans: link.disabled_plans.clone(),
        grants: link.grants,
        policy_id: policy.policy_id.clone(),
        policy_name: policy.name.clone(),
        reassigned: false,
    }
}
