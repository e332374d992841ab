//! The decision rules of design sections 2.2 to 2.6, one test per rule, driven through
//! `autoclaim::replay::Replayer` with records built as wire messages.
mod support;

use std::collections::BTreeSet;

use autoclaim::wire::pb;
use pb::{ActivityKind as K, Outcome as O, Reason as R, Scope, TriggerType as Tr};
use support::*;

const T: &str = "contoso";
/// The propagation delay of most tests.
const DELAY: i64 = HOUR;
/// A time at which everything set up at T0 is in force.
const LIVE: i64 = T0 + 2 * HOUR;

fn run() -> Run {
    Run::new(delay_ms(DELAY))
}

/// Autoclaim on since T0, plenty of seats of both products, members u1..u9, and the given policies.
fn tenant_with(policies: &[PolicySpec]) -> Run {
    let mut r = run();
    r.feed(autoclaim_on(T, T0));
    r.feed(inventory(T, PER_USER, 10, 0, T0));
    r.feed(inventory(T, PREMIUM, 10, 0, T0));
    for i in 1..10 {
        r.feed(UserSpec::member(T, &format!("u{i}")).record());
    }
    for p in policies {
        r.feed(p.record());
    }
    r
}

fn both_products_policy() -> PolicySpec {
    PolicySpec::new(T, "pol", PER_USER, T0).backup(PREMIUM)
}

fn disabled_plans(a: &pb::LicenseAssignment) -> BTreeSet<String> {
    a.disabled_plan_ids
        .iter()
        .map(|p| p.to_ascii_lowercase())
        .collect()
}

fn set(plans: &[&str]) -> BTreeSet<String> {
    plans.iter().map(|p| p.to_ascii_lowercase()).collect()
}

// ------------------------------------------------------------------------------ 2.3 settings

#[test]
fn autoclaim_is_off_by_default() {
    // Everything but the settings: no settings record at all.
    let mut r = run();
    r.feed(inventory(T, PER_USER, 10, 0, T0));
    r.feed(UserSpec::member(T, "u1").record());
    r.feed(PolicySpec::new(T, "pol", PER_USER, T0).record());
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_outcome(&d, O::AutoclaimOff, R::Unspecified);
    // Off is decided before anything else, even for an event that needs nothing.
    let d = r.decide(Ev::saved(T, "e2", "u1", LIVE).standard());
    assert_outcome(&d, O::AutoclaimOff, R::Unspecified);
    // Settings that say off.
    r.feed(settings(T, false, Scope::AllEnvironments, T0));
    let d = r.decide(Ev::saved(T, "e3", "u1", LIVE));
    assert_outcome(&d, O::AutoclaimOff, R::Unspecified);
    // Another tenant's settings do not turn it on.
    r.feed(autoclaim_on("fabrikam", T0));
    let d = r.decide(Ev::saved(T, "e4", "u1", LIVE));
    assert_outcome(&d, O::AutoclaimOff, R::Unspecified);
}

#[test]
fn autoclaim_is_off_until_the_propagation_delay_has_passed() {
    let on_at = T0 + 10 * MIN;
    let mut r = run();
    r.feed(inventory(T, PER_USER, 10, 0, T0));
    r.feed(UserSpec::member(T, "u1").record());
    r.feed(UserSpec::member(T, "u2").record());
    r.feed(PolicySpec::new(T, "pol", PER_USER, T0 - 24 * HOUR).record());
    r.feed(autoclaim_on(T, on_at));
    let d = r.decide(Ev::saved(T, "e1", "u1", on_at));
    assert_outcome(&d, O::AutoclaimOff, R::Unspecified);
    let d = r.decide(Ev::saved(T, "e2", "u1", on_at + DELAY - MS));
    assert_outcome(&d, O::AutoclaimOff, R::Unspecified);
    let d = r.decide(Ev::saved(T, "e3", "u1", on_at + DELAY));
    assert_assigned(&d, PER_USER, "pol");

    // Turning it off is not in force before the delay either.
    let off_at = on_at + 3 * HOUR;
    r.feed(settings(T, false, Scope::AllEnvironments, off_at));
    let d = r.decide(Ev::saved(T, "e4", "u2", off_at + DELAY - MS));
    assert_assigned(&d, PER_USER, "pol");
    let d = r.decide(Ev::saved(T, "e5", "u3", off_at + DELAY));
    assert_outcome(&d, O::AutoclaimOff, R::Unspecified);
}

#[test]
fn a_scope_change_applies_only_once_in_force() {
    let mut r = tenant_with(&[both_products_policy()]);
    let changed = LIVE;
    r.feed(settings(T, true, Scope::ManagedEnvironmentsOnly, changed));
    let d = r.decide(Ev::saved(T, "e1", "u1", changed + DELAY - MS));
    assert_assigned(&d, PER_USER, "pol");
    let d = r.decide(Ev::saved(T, "e2", "u2", changed + DELAY));
    assert_outcome(&d, O::OutOfScope, R::Unspecified);
}

// --------------------------------------------------------------------------- 2.2 requirements

#[test]
fn a_standard_flow_requires_nothing() {
    // One per-user seat: if a standard flow took it, u2 would fail.
    let mut r = tenant_with(&[PolicySpec::new(T, "pol", PER_USER, T0)]);
    r.feed(inventory(T, PER_USER, 1, 0, T0));
    for (i, kind) in [
        K::CloudFlowSaved,
        K::CloudFlowTriggered,
        K::CloudFlowTurnedOn,
    ]
    .into_iter()
    .enumerate()
    {
        for trigger in [Tr::Instant, Tr::Automated, Tr::Scheduled] {
            let e = Ev::saved(T, &format!("s{i}{trigger:?}"), "u1", LIVE)
                .kind(kind)
                .trigger(trigger)
                .standard();
            let d = r.decide(e);
            assert_outcome(&d, O::NotRequired, R::Unspecified);
            assert!(d.assignment.is_none() && d.failure.is_none(), "{d:?}");
        }
    }
    let d = r.decide(Ev::saved(T, "e2", "u2", LIVE + MIN));
    assert_assigned(&d, PER_USER, "pol");
}

#[test]
fn premium_connectors_or_a_managed_environment_require_premium_flows() {
    // A per-user-only policy can serve premium_cloud_flows but not attended RPA.
    let mut r = tenant_with(&[PolicySpec::new(T, "pol", PER_USER, T0)]);
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_assigned(&d, PER_USER, "pol");
    let d = r.decide(Ev::saved(T, "e2", "u2", LIVE).standard().managed());
    assert_assigned(&d, PER_USER, "pol");
}

#[test]
fn attended_rpa_flows_and_desktop_events_require_premium() {
    let policies = [
        PolicySpec::new(T, "pol-user", PER_USER, T0),
        PolicySpec::new(T, "pol-premium", PREMIUM, T0 + MIN),
    ];
    let mut r = tenant_with(&policies);
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE).standard().rpa());
    assert_assigned(&d, PREMIUM, "pol-premium");
    let d = r.decide(Ev::desktop(T, "e2", "u2", LIVE, K::GoPremiumSelected));
    assert_assigned(&d, PREMIUM, "pol-premium");
    let d = r.decide(Ev::desktop(T, "e3", "u3", LIVE, K::PremiumTrialRpaUsed));
    assert_assigned(&d, PREMIUM, "pol-premium");
    // A licence request needs what the named product grants.
    let d = r.decide(Ev::request(T, "e4", "u4", LIVE, PER_USER));
    assert_assigned(&d, PER_USER, "pol-user");
    let d = r.decide(Ev::request(T, "e5", "u5", LIVE, PREMIUM));
    assert_assigned(&d, PREMIUM, "pol-premium");
    // Holding per user does not cover attended RPA.
    r.feed(
        UserSpec::member(T, "u6")
            .licence(PER_USER_SKU, &[])
            .record(),
    );
    let d = r.decide(Ev::desktop(T, "e6", "u6", LIVE, K::GoPremiumSelected));
    assert_assigned(&d, PREMIUM, "pol-premium");
}

/// Every cloud-flow event a flow can give, with premium connectors, attended RPA and a managed
/// environment: each needs Premium unless the flow is exempt.
fn demanding_flow_events(id: &str, actor: &str, at: i64) -> Vec<Ev> {
    let mut events = Vec::new();
    for kind in [
        K::CloudFlowSaved,
        K::CloudFlowTriggered,
        K::CloudFlowTurnedOn,
    ] {
        for trigger in [Tr::Instant, Tr::Automated, Tr::Scheduled] {
            let id = format!("{id}-{kind:?}-{trigger:?}");
            events.push(
                Ev::saved(T, &id, actor, at)
                    .kind(kind)
                    .trigger(trigger)
                    .rpa()
                    .managed(),
            );
        }
    }
    events
}

#[test]
fn a_flow_under_a_process_plan_or_in_a_licensed_app_context_needs_no_per_user_licence() {
    // One Premium seat: if an exempt flow took it, u3 would fail.
    let mut r = tenant_with(&[PolicySpec::new(T, "pol", PREMIUM, T0)]);
    r.feed(inventory(T, PREMIUM, 1, 0, T0));
    for (user, exempt) in [
        ("u1", Ev::process_plan as fn(Ev) -> Ev),
        ("u2", Ev::licensed_app_context),
    ] {
        for e in demanding_flow_events(user, user, LIVE) {
            let d = r.decide(exempt(e));
            assert_outcome(&d, O::NotRequired, R::Unspecified);
            assert!(d.assignment.is_none() && d.failure.is_none(), "{d:?}");
        }
    }
    // The same flow without the exemption needs Premium, and the seat is still free.
    let d = r.decide(Ev::saved(T, "e3", "u3", LIVE + MIN).rpa().managed());
    assert_assigned(&d, PREMIUM, "pol");
}

#[test]
fn an_exempt_flow_is_not_required_before_scope_entitlement_and_eligibility_are_looked_at() {
    let mut r = tenant_with(&[both_products_policy()]);
    r.feed_all([
        // Managed environments only: the unmanaged flow below would be out of scope.
        settings(T, true, Scope::ManagedEnvironmentsOnly, T0 + MIN),
        UserSpec::member(T, "holder")
            .licence(PREMIUM_SKU, &[])
            .record(),
        UserSpec::member(T, "guest").guest().record(),
    ]);
    let at = T0 + 3 * HOUR;
    let unmanaged = Ev::saved(T, "e1", "u1", at).rpa().process_plan();
    assert_outcome(&r.decide(unmanaged), O::NotRequired, R::Unspecified);
    let entitled = Ev::saved(T, "e2", "holder", at).rpa().managed();
    assert_outcome(
        &r.decide(entitled.clone().licensed_app_context()),
        O::NotRequired,
        R::Unspecified,
    );
    assert_outcome(&r.decide(entitled), O::AlreadyEntitled, R::Unspecified);
    let guest = Ev::saved(T, "e3", "guest", at).managed().process_plan();
    assert_outcome(&r.decide(guest), O::NotRequired, R::Unspecified);
    // Autoclaim off still comes first.
    r.feed(settings(T, false, Scope::AllEnvironments, at));
    let later = Ev::saved(T, "e4", "u1", at + DELAY).rpa().process_plan();
    assert_outcome(&r.decide(later), O::AutoclaimOff, R::Unspecified);
}

// ------------------------------------------------------------------------------- event time

/// Refused lines' codes, or the decision.
fn apply_code(r: &mut Run, record: pb::ReplayRecord) -> Result<pb::Decision, &'static str> {
    match r.0.apply(record) {
        Ok(mut lines) => Ok(lines.pop().expect("an activity gives a decision")),
        Err(e) => Err(e.code()),
    }
}

#[test]
fn an_event_stamped_beyond_the_skew_after_its_write_time_is_refused_and_holds_no_seat() {
    // One per-user seat, and a policy not yet in force at the write time.
    let mut r = tenant_with(&[]);
    r.feed(inventory(T, PER_USER, 1, 0, T0));
    let written = LIVE;
    r.feed(PolicySpec::new(T, "later", PER_USER, written).record());
    let year_ahead = Ev::saved(T, "future", "u1", written + 365 * 24 * HOUR);
    assert_eq!(
        apply_code(&mut r, year_ahead.written_at(written)),
        Err("event_time_in_future")
    );
    let just_over = Ev::saved(T, "over", "u1", written + 5 * MIN + MS);
    assert_eq!(
        apply_code(&mut r, just_over.written_at(written)),
        Err("event_time_in_future")
    );
    // Within the skew: decided by its own time, when the policy is not in force yet.
    let at_bound = Ev::saved(T, "bound", "u1", written + 5 * MIN);
    let d = apply_code(&mut r, at_bound.written_at(written)).unwrap();
    assert_outcome(&d, O::NoPolicy, R::Unspecified);
    // Once the policy is in force, the seat the future event would have held is free.
    let d = apply_code(
        &mut r,
        Ev::saved(T, "now", "u2", written + DELAY).written_at(written + DELAY),
    )
    .unwrap();
    assert_assigned(&d, PER_USER, "later");
    // Late events, and records with no write time, are not bounded.
    let late = Ev::saved(T, "late", "u3", written).written_at(written + 30 * 24 * HOUR);
    assert!(apply_code(&mut r, late).is_ok());
    let unknown = Ev::saved(T, "unknown", "u4", written + 365 * 24 * HOUR).record();
    assert!(apply_code(&mut r, unknown).is_ok());
}

#[test]
fn the_allowed_skew_is_the_replayers_to_choose() {
    let strict = autoclaim::replay::Replayer::new(delay_ms(DELAY))
        .with_max_event_time_skew(std::time::Duration::ZERO);
    let mut r = Run(strict);
    r.feed(autoclaim_on(T, T0));
    let e = Ev::saved(T, "e1", "u1", LIVE + MS);
    assert_eq!(
        apply_code(&mut r, e.written_at(LIVE)),
        Err("event_time_in_future")
    );
    let e = Ev::saved(T, "e2", "u1", LIVE);
    assert!(apply_code(&mut r, e.written_at(LIVE)).is_ok());
}

#[test]
fn whose_licence_owner_for_automated_and_scheduled_triggers_else_the_actor() {
    let mut r = tenant_with(&[both_products_policy()]);
    // The owner holds per user; the actor holds nothing.
    r.feed(
        UserSpec::member(T, "owner")
            .licence(PER_USER_SKU, &[])
            .record(),
    );
    for trigger in [Tr::Automated, Tr::Scheduled] {
        let e = Ev::saved(T, &format!("t-{trigger:?}"), "u1", LIVE)
            .kind(K::CloudFlowTriggered)
            .trigger(trigger)
            .owner("owner");
        let d = r.decide(e);
        assert_eq!(d.subject_user_id, "owner", "{trigger:?}: {d:?}");
        assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
    }
    // An instant flow's trigger needs the invoker's licence.
    let e = Ev::saved(T, "t-instant", "u1", LIVE)
        .kind(K::CloudFlowTriggered)
        .trigger(Tr::Instant)
        .owner("owner");
    let d = r.decide(e);
    assert_eq!(d.subject_user_id, "u1");
    assert_eq!(assert_assigned(&d, PER_USER, "pol").user_id, "u1");
    // Saves and turn-ons need the actor's, whatever the trigger.
    for (i, (kind, trigger)) in [
        (K::CloudFlowSaved, Tr::Automated),
        (K::CloudFlowTurnedOn, Tr::Scheduled),
    ]
    .into_iter()
    .enumerate()
    {
        let actor = format!("u{}", i + 2);
        let e = Ev::saved(T, &format!("a{i}"), &actor, LIVE)
            .kind(kind)
            .trigger(trigger)
            .owner("owner");
        let d = r.decide(e);
        assert_eq!(d.subject_user_id, actor, "{d:?}");
        assert_eq!(assert_assigned(&d, PER_USER, "pol").user_id, actor);
    }
    // Requests and desktop events: the actor's.
    let d = r.decide(Ev::request(T, "r", "u5", LIVE, PER_USER));
    assert_eq!(assert_assigned(&d, PER_USER, "pol").user_id, "u5");
    let d = r.decide(Ev::desktop(T, "g", "u6", LIVE, K::GoPremiumSelected));
    assert_eq!(assert_assigned(&d, PREMIUM, "pol").user_id, "u6");
    // An automated trigger whose owner is unknown is about the owner, not the actor.
    let e = Ev::saved(T, "t-ghost", "u7", LIVE)
        .kind(K::CloudFlowTriggered)
        .trigger(Tr::Automated)
        .owner("ghost");
    let d = r.decide(e);
    assert_eq!(d.subject_user_id, "ghost");
    assert_outcome(&d, O::NotEligible, R::UnknownUser);
}

// ------------------------------------------------------------------------------------- scope

#[test]
fn managed_environments_only_puts_unmanaged_cloud_flows_out_of_scope() {
    let mut r = tenant_with(&[both_products_policy()]);
    r.feed(settings(T, true, Scope::ManagedEnvironmentsOnly, T0));
    for (i, kind) in [
        K::CloudFlowSaved,
        K::CloudFlowTriggered,
        K::CloudFlowTurnedOn,
    ]
    .into_iter()
    .enumerate()
    {
        let d = r.decide(Ev::saved(T, &format!("o{i}"), "u1", LIVE).kind(kind));
        assert_outcome(&d, O::OutOfScope, R::Unspecified);
    }
    let d = r.decide(Ev::saved(T, "o-rpa", "u1", LIVE).rpa());
    assert_outcome(&d, O::OutOfScope, R::Unspecified);
    // A managed environment is in scope.
    let d = r.decide(Ev::saved(T, "m1", "u2", LIVE).managed());
    assert_assigned(&d, PER_USER, "pol");
    // Licence requests and desktop events are not cloud-flow events: never out of scope.
    let d = r.decide(Ev::request(T, "r1", "u3", LIVE, PER_USER));
    assert_assigned(&d, PER_USER, "pol");
    let d = r.decide(Ev::desktop(T, "d1", "u4", LIVE, K::GoPremiumSelected));
    assert_assigned(&d, PREMIUM, "pol");
    let d = r.decide(Ev::desktop(T, "d2", "u5", LIVE, K::PremiumTrialRpaUsed));
    assert_assigned(&d, PREMIUM, "pol");
}

#[test]
fn all_environments_scope_serves_unmanaged_flows() {
    let mut r = tenant_with(&[both_products_policy()]);
    r.feed(settings(T, true, Scope::AllEnvironments, T0 + MIN));
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_assigned(&d, PER_USER, "pol");
}

// ------------------------------------------------------------------------------- entitlement

#[test]
fn already_entitled_from_the_directory() {
    let mut r = tenant_with(&[both_products_policy()]);
    r.feed_all([
        UserSpec::member(T, "pu")
            .licence(PER_USER_SKU, &[])
            .record(),
        UserSpec::member(T, "pr").licence(PREMIUM_SKU, &[]).record(),
        // Disabling plans that grant nothing keeps the capability.
        UserSpec::member(T, "pr-partial")
            .licence(PREMIUM_SKU, &[CDS_ATTENDED_RPA, EXCHANGE_S_FOUNDATION])
            .record(),
        // SKU ids are GUIDs: case does not matter.
        UserSpec::member(T, "pu-upper")
            .licence(&PER_USER_SKU.to_ascii_uppercase(), &[])
            .record(),
    ]);
    let d = r.decide(Ev::saved(T, "e1", "pu", LIVE));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
    let d = r.decide(Ev::request(T, "e2", "pu", LIVE, PER_USER));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
    let d = r.decide(Ev::saved(T, "e3", "pr", LIVE));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
    let d = r.decide(Ev::desktop(T, "e4", "pr", LIVE, K::GoPremiumSelected));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
    let d = r.decide(Ev::request(T, "e5", "pr", LIVE, PER_USER));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
    let d = r.decide(Ev::saved(T, "e6", "pr-partial", LIVE).rpa());
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
    let d = r.decide(Ev::saved(T, "e7", "pu-upper", LIVE));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
    // Entitlement is checked before eligibility: an entitled guest is ALREADY_ENTITLED.
    r.feed(
        UserSpec::member(T, "guest")
            .guest()
            .licence(PREMIUM_SKU, &[])
            .record(),
    );
    let d = r.decide(Ev::saved(T, "e8", "guest", LIVE));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
}

#[test]
fn a_licence_whose_granting_plan_is_disabled_does_not_entitle() {
    let mut r = tenant_with(&[both_products_policy()]);
    r.feed_all([
        UserSpec::member(T, "pr-no-rpa")
            .licence(PREMIUM_SKU, &[POWER_AUTOMATE_ATTENDED_RPA])
            .record(),
        UserSpec::member(T, "pu-no-flow")
            .licence(PER_USER_SKU, &[FLOW_PER_USER])
            .record(),
        // A licence outside the catalog grants nothing autoclaim deals in.
        UserSpec::member(T, "e5")
            .licence("06ebc4ee-1bb5-47dd-8120-11324bc54e06", &[])
            .record(),
    ]);
    let d = r.decide(Ev::saved(T, "e1", "pr-no-rpa", LIVE));
    assert_assigned(&d, PER_USER, "pol");
    // Per user is held (its flow plan off), so the chain goes on to premium.
    let d = r.decide(Ev::saved(T, "e2", "pu-no-flow", LIVE));
    assert_assigned(&d, PREMIUM, "pol");
    let d = r.decide(Ev::saved(T, "e3", "e5", LIVE));
    assert_assigned(&d, PER_USER, "pol");
}

#[test]
fn a_held_product_is_skipped_takes_no_seat_and_is_never_assigned_again() {
    // Hand-worked: one premium seat. "rpa-off" holds premium with POWER_AUTOMATE_ATTENDED_RPA
    // disabled and runs an RPA flow. The chain is per user (not sufficient for RPA), then premium
    // (held): nothing is left, so the claim fails with GRANTING_PLAN_DISABLED and takes no seat;
    // u1 then gets the one seat.
    let mut r = tenant_with(&[both_products_policy()]);
    r.feed(inventory(T, PREMIUM, 1, 0, T0));
    r.feed(
        UserSpec::member(T, "rpa-off")
            .licence(PREMIUM_SKU, &[POWER_AUTOMATE_ATTENDED_RPA])
            .record(),
    );
    let d = r.decide(Ev::saved(T, "e1", "rpa-off", LIVE).rpa());
    assert_outcome(&d, O::Failed, R::GrantingPlanDisabled);
    assert!(d.assignment.is_none(), "{d:?}");
    let f = d.failure.as_ref().expect("published as a failure");
    assert_eq!((f.product.as_str(), f.policy_id.as_str()), (PREMIUM, "pol"));
    assert_eq!(f.reason, R::GrantingPlanDisabled as i32);
    let d = r.decide(Ev::saved(T, "e2", "u1", LIVE + MIN).rpa());
    assert_assigned(&d, PREMIUM, "pol");
    // The same user's non-RPA flow is covered by nothing held either (the granting plan grants
    // both): per user is not held, so it is assigned.
    let d = r.decide(Ev::saved(T, "e3", "rpa-off", LIVE + 2 * MIN));
    assert_assigned(&d, PER_USER, "pol");
    // With no seat left anywhere, a chain with an unheld product fails for seats, not plans.
    r.feed(inventory(T, PER_USER, 0, 0, LIVE + 3 * MIN));
    r.feed(
        UserSpec::member(T, "rpa-off-2")
            .licence(PREMIUM_SKU, &[POWER_AUTOMATE_ATTENDED_RPA])
            .record(),
    );
    let d = r.decide(Ev::saved(T, "e4", "rpa-off-2", LIVE + 4 * MIN));
    assert_no_licences(&d);
}

#[test]
fn once_the_directory_reflects_an_own_assignment_the_directory_decides() {
    // Two per-user seats. u1 is assigned per user at LIVE.
    let mut r = tenant_with(&[PolicySpec::new(T, "pol", PER_USER, T0)]);
    r.feed(inventory(T, PER_USER, 2, 0, T0));
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_assigned(&d, PER_USER, "pol");
    let first_id = d.assignment.as_ref().unwrap().assignment_id.clone();
    // A row taken before the assignment that shows per user (a stale snapshot, from before an
    // earlier removal) does not reflect this assignment; the next row without it then changes
    // nothing: the directory has not caught up.
    r.feed(
        UserSpec::member(T, "u1")
            .taken_at(LIVE - MIN)
            .licence(PER_USER_SKU, &[])
            .record(),
    );
    r.feed(UserSpec::member(T, "u1").taken_at(LIVE + MIN).record());
    let d = r.decide(Ev::saved(T, "e2", "u1", LIVE + 2 * MIN));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
    // The directory shows it: entitled from the directory.
    r.feed(
        UserSpec::member(T, "u1")
            .taken_at(LIVE + 3 * MIN)
            .licence(PER_USER_SKU, &[])
            .record(),
    );
    let d = r.decide(Ev::saved(T, "e3", "u1", LIVE + 4 * MIN));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
    // An administrator removes it: the user needs it again and the policy assigns it (the second
    // seat), once; the directory not having caught up with that one again holds it.
    r.feed(UserSpec::member(T, "u1").taken_at(LIVE + 5 * MIN).record());
    let d = r.decide(Ev::saved(T, "e4", "u1", LIVE + 6 * MIN));
    assert_assigned(&d, PER_USER, "pol");
    // A new assignment, so a new id: a consumer deduplicating by id must not drop it.
    let again_id = &d.assignment.as_ref().unwrap().assignment_id;
    assert_ne!(again_id, &first_id);
    let d = r.decide(Ev::saved(T, "e5", "u1", LIVE + 7 * MIN));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
    // Seats stay exact: both own assignments follow the snapshot, so none is left for u2.
    let d = r.decide(Ev::saved(T, "e6", "u2", LIVE + 8 * MIN));
    assert_no_licences(&d);
}

#[test]
fn already_entitled_from_the_processors_own_earlier_assignment() {
    let mut r = tenant_with(&[both_products_policy()]);
    // Two per-user seats: u1's later events must not take the second one from u2.
    r.feed(inventory(T, PER_USER, 2, 0, T0));
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_assigned(&d, PER_USER, "pol");
    // The directory does not reflect the assignment yet.
    for (i, e) in [
        Ev::saved(T, "e2", "u1", LIVE + MIN),
        Ev::saved(T, "e3", "u1", LIVE + MIN).kind(K::CloudFlowTurnedOn),
        Ev::request(T, "e4", "u1", LIVE + MIN, PER_USER),
        Ev::saved(T, "e5", "u1", LIVE - HOUR), // an older event arriving late
    ]
    .into_iter()
    .enumerate()
    {
        let d = r.decide(e);
        assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
        assert!(d.assignment.is_none(), "{i}: {d:?}");
    }
    // A directory snapshot that still does not show it, or the user's removal, changes nothing.
    r.feed(UserSpec::member(T, "u1").record());
    let d = r.decide(Ev::saved(T, "e6", "u1", LIVE + 2 * MIN));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
    r.feed(user_deleted(T, "u1"));
    let d = r.decide(Ev::saved(T, "e6b", "u1", LIVE + 2 * MIN));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
    r.feed(UserSpec::member(T, "u1").record());
    let d = r.decide(Ev::saved(T, "e7", "u2", LIVE + 3 * MIN));
    assert_assigned(&d, PER_USER, "pol");
    // What per user grants does not cover RPA: u1 still gets premium for it.
    let d = r.decide(Ev::desktop(
        T,
        "e8",
        "u1",
        LIVE + 4 * MIN,
        K::GoPremiumSelected,
    ));
    assert_assigned(&d, PREMIUM, "pol");
    let d = r.decide(Ev::desktop(
        T,
        "e9",
        "u1",
        LIVE + 5 * MIN,
        K::GoPremiumSelected,
    ));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
}

// ------------------------------------------------------------------------------- eligibility

#[test]
fn not_eligible_disabled_guest_unknown_and_missing_usage_location() {
    let mut r = tenant_with(&[both_products_policy()]);
    r.feed_all([
        UserSpec::member(T, "off").disabled().record(),
        UserSpec::member(T, "guest").guest().record(),
        UserSpec::member(T, "nowhere").no_usage_location().record(),
        UserSpec::member(T, "gone").record(),
        user_deleted(T, "gone"),
    ]);
    let d = r.decide(Ev::saved(T, "e1", "off", LIVE));
    assert_outcome(&d, O::NotEligible, R::AccountDisabled);
    let d = r.decide(Ev::saved(T, "e2", "guest", LIVE));
    assert_outcome(&d, O::NotEligible, R::Guest);
    let d = r.decide(Ev::saved(T, "e3", "stranger", LIVE));
    assert_outcome(&d, O::NotEligible, R::UnknownUser);
    let d = r.decide(Ev::saved(T, "e4", "gone", LIVE));
    assert_outcome(&d, O::NotEligible, R::UnknownUser);
    // A user of another tenant is unknown here.
    r.feed(UserSpec::member("fabrikam", "alien").record());
    let d = r.decide(Ev::saved(T, "e5", "alien", LIVE));
    assert_outcome(&d, O::NotEligible, R::UnknownUser);
    assert!(d.assignment.is_none() && d.failure.is_none(), "{d:?}");
    let d = r.decide(Ev::saved(T, "e6", "nowhere", LIVE));
    assert_outcome(&d, O::Failed, R::UsageLocationMissing);
    let f = d.failure.as_ref().expect("a failure message");
    assert_eq!(f.reason, R::UsageLocationMissing as i32);
    assert_eq!(f.user_id, "nowhere");
    assert!(d.assignment.is_none());
    // Once the directory knows the usage location, the claim goes through.
    r.feed(UserSpec::member(T, "nowhere").record());
    let d = r.decide(Ev::saved(T, "e7", "nowhere", LIVE + MIN));
    assert_assigned(&d, PER_USER, "pol");
}

// ---------------------------------------------------------------------------------- policies

#[test]
fn no_policy_when_autoclaim_is_on_but_no_policy_exists() {
    let mut r = tenant_with(&[]);
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_outcome(&d, O::NoPolicy, R::Unspecified);
    // Another tenant's policy does not count.
    r.feed(PolicySpec::new("fabrikam", "pol", PER_USER, T0).record());
    let d = r.decide(Ev::saved(T, "e2", "u1", LIVE));
    assert_outcome(&d, O::NoPolicy, R::Unspecified);
}

#[test]
fn no_policy_when_only_disabled_or_deleted_policies_exist() {
    let mut r = tenant_with(&[
        PolicySpec::new(T, "off", PER_USER, T0)
            .backup(PREMIUM)
            .enabled(false),
        PolicySpec::new(T, "gone", PREMIUM, T0).deleted(),
        PolicySpec::new(T, "gone-off", PER_USER, T0)
            .enabled(false)
            .deleted(),
    ]);
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_outcome(&d, O::NoPolicy, R::Unspecified);
    let d = r.decide(Ev::desktop(T, "e2", "u1", LIVE, K::GoPremiumSelected));
    assert_outcome(&d, O::NoPolicy, R::Unspecified);
}

#[test]
fn no_policy_when_no_chain_can_grant_the_need() {
    let mut r = tenant_with(&[PolicySpec::new(T, "pol-user", PER_USER, T0)]);
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE).rpa());
    assert_outcome(&d, O::NoPolicy, R::Unspecified);
    let d = r.decide(Ev::desktop(T, "e2", "u1", LIVE, K::GoPremiumSelected));
    assert_outcome(&d, O::NoPolicy, R::Unspecified);
    let d = r.decide(Ev::desktop(T, "e3", "u1", LIVE, K::PremiumTrialRpaUsed));
    assert_outcome(&d, O::NoPolicy, R::Unspecified);
    let d = r.decide(Ev::request(T, "e4", "u1", LIVE, PREMIUM));
    assert_outcome(&d, O::NoPolicy, R::Unspecified);
    // The same policy serves a non-RPA need.
    let d = r.decide(Ev::saved(T, "e5", "u1", LIVE));
    assert_assigned(&d, PER_USER, "pol-user");
}

#[test]
fn the_narrowest_sufficient_product_comes_before_creation_time() {
    // The premium policy is older and its id sorts first; the per-user one still wins for a
    // non-RPA need.
    let mut r = tenant_with(&[
        PolicySpec::new(T, "a-premium", PREMIUM, T0 - 48 * HOUR),
        PolicySpec::new(T, "z-per-user", PER_USER, T0),
    ]);
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_assigned(&d, PER_USER, "z-per-user");
    let d = r.decide(Ev::request(T, "e2", "u2", LIVE, PER_USER));
    assert_assigned(&d, PER_USER, "z-per-user");
    // For an RPA need only premium is sufficient.
    let d = r.decide(Ev::saved(T, "e3", "u3", LIVE).rpa());
    assert_assigned(&d, PREMIUM, "a-premium");
}

#[test]
fn among_equally_narrow_policies_the_oldest_comes_first() {
    for (older, newer) in [("a-pol", "z-pol"), ("z-pol", "a-pol")] {
        let mut r = tenant_with(&[
            PolicySpec::new(T, newer, PER_USER, T0).exclude(PER_USER, &[EXCHANGE_S_FOUNDATION]),
            PolicySpec::new(T, older, PER_USER, T0 - HOUR),
        ]);
        let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
        let a = assert_assigned(&d, PER_USER, older);
        assert!(a.disabled_plan_ids.is_empty(), "{a:?}");
        assert_eq!(a.policy_name, format!("policy {older}"));
    }
}

#[test]
fn creation_time_not_change_time_orders_policies() {
    // The older policy was edited after the newer one was created: it stays first.
    let mut r = tenant_with(&[
        PolicySpec::new(T, "old", PER_USER, T0 - 5 * HOUR),
        PolicySpec::new(T, "new", PER_USER, T0 - 4 * HOUR),
        PolicySpec::new(T, "old", PER_USER, T0 - 5 * HOUR)
            .exclude(PER_USER, &[DYN365_CDS_P2])
            .changed_at(T0 - 3 * HOUR),
    ]);
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    let a = assert_assigned(&d, PER_USER, "old");
    assert_eq!(disabled_plans(a), set(&[DYN365_CDS_P2]));
}

#[test]
fn backups_are_walked_in_order_when_seats_run_out() {
    let mut r = tenant_with(&[PolicySpec::new(T, "pol", PER_USER, T0).backup(PREMIUM)]);
    r.feed(inventory(T, PER_USER, 1, 0, T0));
    r.feed(inventory(T, PREMIUM, 1, 0, T0));
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_assigned(&d, PER_USER, "pol");
    let d = r.decide(Ev::saved(T, "e2", "u2", LIVE + MIN));
    assert_assigned(&d, PREMIUM, "pol");
    let d = r.decide(Ev::saved(T, "e3", "u3", LIVE + 2 * MIN));
    assert_no_licences(&d);
    // More premium seats: the backup serves again, first to the claim waiting for it.
    let lines = r.feed_redeciding(inventory(T, PREMIUM, 2, 1, LIVE + 3 * MIN));
    assert_fulfilled(&lines, "u3", PREMIUM, LIVE + 2 * MIN);
    let d = r.decide(Ev::saved(T, "e4", "u3", LIVE + 4 * MIN));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
}

/// The lines a table record gave are one assignment, to `user`, of `product`, fulfilling the
/// claim waiting since `since`.
fn assert_fulfilled(lines: &[pb::Decision], user: &str, product: &str, since: i64) {
    let [d] = lines else {
        panic!("expected one assignment, got {lines:?}");
    };
    assert_assigned(d, product, "pol");
    assert_eq!(d.subject_user_id, user, "{d:?}");
    let a = d.assignment.as_ref().unwrap();
    assert_eq!(a.pending_since, Some(ts(since)), "{d:?}");
    assert_eq!(d.claims.len(), 1, "{d:?}");
    assert_eq!(d.claims[0].status, pb::ClaimStatus::Fulfilled as i32);
    assert_eq!(d.claims[0].assignment_id, a.assignment_id);
}

#[test]
fn the_next_candidate_policy_is_tried_when_a_chain_has_no_seat() {
    let mut r = tenant_with(&[
        PolicySpec::new(T, "first", PER_USER, T0 - HOUR),
        PolicySpec::new(T, "second", PER_USER, T0)
            .backup(PREMIUM)
            .exclude(PREMIUM, &[EXCHANGE_S_FOUNDATION]),
    ]);
    r.feed(inventory(T, PER_USER, 0, 0, T0));
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    let a = assert_assigned(&d, PREMIUM, "second");
    assert_eq!(disabled_plans(a), set(&[EXCHANGE_S_FOUNDATION]));
}

#[test]
fn disabled_plans_are_the_policys_excluded_apps() {
    let mut r = tenant_with(&[PolicySpec::new(T, "pol", PER_USER, T0)
        .backup(PREMIUM)
        .exclude(PER_USER, &[EXCHANGE_S_FOUNDATION, DYN365_CDS_P2])
        .exclude(PREMIUM, &[CDS_ATTENDED_RPA])]);
    r.feed(inventory(T, PER_USER, 1, 0, T0));
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    let a = assert_assigned(&d, PER_USER, "pol");
    assert_eq!(
        disabled_plans(a),
        set(&[EXCHANGE_S_FOUNDATION, DYN365_CDS_P2])
    );
    assert_eq!(a.disabled_plan_ids.len(), 2, "{a:?}");
    assert_eq!(a.sku_id, PER_USER_SKU);
    assert_eq!(a.sku_part_number, "FLOW_PER_USER");
    let d = r.decide(Ev::saved(T, "e2", "u2", LIVE));
    let a = assert_assigned(&d, PREMIUM, "pol");
    assert_eq!(disabled_plans(a), set(&[CDS_ATTENDED_RPA]));
    assert_eq!(a.sku_part_number, "POWERAUTOMATE_ATTENDED_RPA");
    // A policy without exclusions disables nothing.
    let mut r = tenant_with(&[PolicySpec::new(T, "plain", PREMIUM, T0)]);
    let d = r.decide(Ev::desktop(T, "e3", "u3", LIVE, K::GoPremiumSelected));
    let a = assert_assigned(&d, PREMIUM, "plain");
    assert!(a.disabled_plan_ids.is_empty(), "{a:?}");
}

#[test]
fn a_policy_excluding_a_granting_plan_is_refused() {
    let mut r = run();
    let bad =
        PolicySpec::new(T, "bad", PREMIUM, T0).exclude(PREMIUM, &[POWER_AUTOMATE_ATTENDED_RPA]);
    let err = r.0.apply(bad.record()).expect_err("must be refused");
    assert!(
        err.to_string().contains("POWER_AUTOMATE_ATTENDED_RPA"),
        "{err}"
    );
    let bad = PolicySpec::new(T, "bad", PER_USER, T0).exclude(PER_USER, &[FLOW_PER_USER]);
    assert!(r.0.apply(bad.record()).is_err());
}

#[test]
fn a_disabled_policy_stops_new_claims_only_once_in_force() {
    let mut r = tenant_with(&[both_products_policy()]);
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_assigned(&d, PER_USER, "pol");
    let changed = LIVE + HOUR;
    r.feed(
        both_products_policy()
            .enabled(false)
            .changed_at(changed)
            .record(),
    );
    let d = r.decide(Ev::saved(T, "e2", "u2", changed + DELAY - MS));
    assert_assigned(&d, PER_USER, "pol");
    let d = r.decide(Ev::saved(T, "e3", "u3", changed + DELAY));
    assert_outcome(&d, O::NoPolicy, R::Unspecified);
    // Licences already claimed stay.
    let d = r.decide(Ev::saved(T, "e4", "u1", changed + DELAY));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
    // Decisions use the event's time: a late event from before the change still claims.
    let d = r.decide(Ev::saved(T, "e5", "u4", changed));
    assert_assigned(&d, PER_USER, "pol");
    // Turning it back on is not in force before the delay either.
    let back = changed + 3 * HOUR;
    r.feed(both_products_policy().changed_at(back).record());
    let d = r.decide(Ev::saved(T, "e6", "u5", back + DELAY - MS));
    assert_outcome(&d, O::NoPolicy, R::Unspecified);
    let d = r.decide(Ev::saved(T, "e7", "u5", back + DELAY));
    assert_assigned(&d, PER_USER, "pol");
}

#[test]
fn a_deleted_policy_stops_new_claims_only_once_in_force() {
    let mut r = tenant_with(&[both_products_policy()]);
    let d = r.decide(Ev::desktop(T, "e1", "u1", LIVE, K::GoPremiumSelected));
    assert_assigned(&d, PREMIUM, "pol");
    let changed = LIVE + HOUR;
    r.feed(
        both_products_policy()
            .deleted()
            .changed_at(changed)
            .record(),
    );
    let d = r.decide(Ev::saved(T, "e2", "u2", changed + DELAY - MS));
    assert_assigned(&d, PER_USER, "pol");
    let d = r.decide(Ev::saved(T, "e3", "u3", changed + DELAY));
    assert_outcome(&d, O::NoPolicy, R::Unspecified);
    let d = r.decide(Ev::desktop(
        T,
        "e4",
        "u1",
        changed + DELAY,
        K::GoPremiumSelected,
    ));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
}

#[test]
fn a_new_policy_is_used_from_creation_plus_the_delay() {
    let created = LIVE;
    let mut r = tenant_with(&[]);
    r.feed(PolicySpec::new(T, "pol", PER_USER, created).record());
    let d = r.decide(Ev::saved(T, "e1", "u1", created));
    assert_outcome(&d, O::NoPolicy, R::Unspecified);
    let d = r.decide(Ev::saved(T, "e2", "u1", created + DELAY - MS));
    assert_outcome(&d, O::NoPolicy, R::Unspecified);
    let d = r.decide(Ev::saved(T, "e3", "u1", created + DELAY));
    assert_assigned(&d, PER_USER, "pol");
}

#[test]
fn a_policy_edit_applies_only_once_in_force() {
    // Changing the primary product: the previous version stays in force until the delay passes.
    let mut r = tenant_with(&[PolicySpec::new(T, "pol", PER_USER, T0)]);
    let changed = LIVE;
    r.feed(
        PolicySpec::new(T, "pol", PREMIUM, T0)
            .exclude(PREMIUM, &[EXCHANGE_S_FOUNDATION])
            .changed_at(changed)
            .record(),
    );
    let d = r.decide(Ev::saved(T, "e1", "u1", changed + DELAY - MS));
    let a = assert_assigned(&d, PER_USER, "pol");
    assert!(a.disabled_plan_ids.is_empty());
    let d = r.decide(Ev::saved(T, "e2", "u2", changed + DELAY));
    let a = assert_assigned(&d, PREMIUM, "pol");
    assert_eq!(disabled_plans(a), set(&[EXCHANGE_S_FOUNDATION]));
}

#[test]
fn many_pending_changes_do_not_evict_the_version_in_force() {
    // Design 2.4: until a change is in force the previous version stays in force. An admin who
    // edits a setting or a policy many times within one propagation delay must not lose the
    // version that is in force meanwhile.
    let mut r = tenant_with(&[both_products_policy()]);
    let burst = LIVE;
    for i in 0..20 {
        r.feed(settings(
            T,
            i % 2 == 1,
            Scope::AllEnvironments,
            burst + i * SEC,
        ));
        r.feed(
            both_products_policy()
                .enabled(i % 2 == 1)
                .changed_at(burst + i * SEC)
                .record(),
        );
    }
    // One minute after the burst none of its versions is in force: the T0 versions are.
    let d = r.decide(Ev::saved(T, "e1", "u1", burst + MIN));
    assert_assigned(&d, PER_USER, "pol");
}

// --------------------------------------------------------------------------------------- seats

#[test]
fn no_seat_anywhere_fails_with_no_licenses_available() {
    let mut r = tenant_with(&[PolicySpec::new(T, "pol", PER_USER, T0).backup(PREMIUM)]);
    r.feed(inventory(T, PER_USER, 3, 3, T0));
    r.feed(inventory(T, PREMIUM, 1, 5, T0)); // over-assigned by billing: still no seat
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_no_licences(&d);
    let f = d.failure.as_ref().unwrap();
    assert_eq!(f.policy_id, "pol");
    assert_eq!(f.user_id, "u1");
    assert_eq!(f.trigger_event_id, "e1");
    assert_eq!(f.reason, R::NoLicensesAvailable as i32);
    // A failed claim takes no seat; it waits, and gets the first seat that comes.
    let lines = r.feed_redeciding(inventory(T, PER_USER, 4, 3, LIVE + MIN));
    assert_fulfilled(&lines, "u1", PER_USER, LIVE);
    let d = r.decide(Ev::saved(T, "e2", "u1", LIVE + 2 * MIN));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
}

#[test]
fn a_failure_names_the_narrowest_sufficient_product_of_the_first_candidate() {
    // proto/autoclaim/v1/autoclaim.proto, AutoclaimFailure.product: "the narrowest sufficient
    // product of the first candidate policy". The policy lists premium first, per user second;
    // for a non-RPA flow the narrowest sufficient product is per user.
    let mut r = tenant_with(&[PolicySpec::new(T, "pol", PREMIUM, T0).backup(PER_USER)]);
    r.feed(inventory(T, PER_USER, 0, 0, T0));
    r.feed(inventory(T, PREMIUM, 0, 0, T0));
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_no_licences(&d);
    assert_eq!(d.failure.as_ref().unwrap().product, PER_USER, "{d:?}");
}

#[test]
fn no_inventory_record_means_no_seats() {
    let mut r = run();
    r.feed(autoclaim_on(T, T0));
    r.feed(UserSpec::member(T, "u1").record());
    r.feed(
        PolicySpec::new(T, "pol", PER_USER, T0)
            .backup(PREMIUM)
            .record(),
    );
    // Another tenant's inventory does not count.
    r.feed(inventory("fabrikam", PER_USER, 100, 0, T0));
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_no_licences(&d);
    let lines = r.feed_redeciding(inventory(T, PREMIUM, 1, 0, T0));
    assert_fulfilled(&lines, "u1", PREMIUM, LIVE);
    let d = r.decide(Ev::saved(T, "e2", "u1", LIVE + MIN));
    assert_outcome(&d, O::AlreadyEntitled, R::Unspecified);
}

#[test]
fn seats_are_purchased_minus_assigned_minus_own_assignments_after_the_snapshot() {
    let mut r = tenant_with(&[PolicySpec::new(T, "pol", PER_USER, T0)]);
    // 3 seats left as of T0.
    r.feed(inventory(T, PER_USER, 5, 2, T0));
    for (i, user) in ["u1", "u2", "u3"].into_iter().enumerate() {
        let d = r.decide(Ev::saved(T, &format!("a{i}"), user, LIVE + i as i64 * MIN));
        assert_assigned(&d, PER_USER, "pol");
    }
    let d = r.decide(Ev::saved(T, "a3", "u4", LIVE + 3 * MIN));
    assert_no_licences(&d);
    // Billing's next snapshot counts the three (2 + 3 = 5 assigned) and 2 more bought: 2 left.
    // Counting the three again would leave none; forgetting later ones would leave too many.
    // The first goes to u4, who has been waiting.
    let lines = r.feed_redeciding(inventory(T, PER_USER, 7, 5, LIVE + 10 * MIN));
    assert_fulfilled(&lines, "u4", PER_USER, LIVE + 3 * MIN);
    let d = r.decide(Ev::saved(T, "b2", "u5", LIVE + 12 * MIN));
    assert_assigned(&d, PER_USER, "pol");
    let d = r.decide(Ev::saved(T, "b3", "u6", LIVE + 13 * MIN));
    assert_no_licences(&d);
    // An older snapshot arriving late does not roll the count back.
    r.feed(inventory(T, PER_USER, 100, 0, T0 + MIN));
    let d = r.decide(Ev::saved(T, "b4", "u6", LIVE + 14 * MIN));
    assert_no_licences(&d);
    // Seats are per product: premium is untouched.
    let d = r.decide(Ev::desktop(
        T,
        "b5",
        "u6",
        LIVE + 15 * MIN,
        K::GoPremiumSelected,
    ));
    assert_outcome(&d, O::NoPolicy, R::Unspecified);
}

#[test]
fn an_assignment_processed_after_a_snapshot_counts_against_it_whatever_its_event_time() {
    // Design 2.6: "Available never goes below zero, under any interleaving." A snapshot read
    // before an assignment was decided cannot include it, even when the activity's own time is
    // not later than the snapshot's as_of (events lag, billing sync runs ahead of them).
    let mut r = tenant_with(&[PolicySpec::new(T, "pol", PER_USER, T0)]);
    // One seat, as of LIVE + 10 min; the events below happened (slightly) before that.
    r.feed(inventory(T, PER_USER, 1, 0, LIVE + 10 * MIN));
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_assigned(&d, PER_USER, "pol");
    let d = r.decide(Ev::saved(T, "e2", "u2", LIVE + MIN));
    assert_no_licences(&d);
}

#[test]
fn an_assignment_at_the_snapshots_own_instant_counts_against_it() {
    // The same rule at the boundary: events whose time equals the snapshot's as_of, decided after
    // the snapshot was read.
    let mut r = tenant_with(&[PolicySpec::new(T, "pol", PER_USER, T0)]);
    r.feed(inventory(T, PER_USER, 1, 0, LIVE));
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_assigned(&d, PER_USER, "pol");
    let d = r.decide(Ev::saved(T, "e2", "u2", LIVE));
    assert_no_licences(&d);
}

#[test]
fn seats_of_one_tenant_are_not_spent_by_another() {
    let mut r = tenant_with(&[PolicySpec::new(T, "pol", PER_USER, T0)]);
    r.feed(inventory(T, PER_USER, 1, 0, T0));
    r.feed_all([
        autoclaim_on("fabrikam", T0),
        inventory("fabrikam", PER_USER, 1, 0, T0),
        UserSpec::member("fabrikam", "u1").record(),
        PolicySpec::new("fabrikam", "pol", PER_USER, T0).record(),
    ]);
    let d = r.decide(Ev::saved("fabrikam", "f1", "u1", LIVE));
    assert_assigned(&d, PER_USER, "pol");
    // The same user id in another tenant is another user.
    let d = r.decide(Ev::saved(T, "c1", "u1", LIVE));
    assert_assigned(&d, PER_USER, "pol");
}

// ------------------------------------------------------------------------------ assignment id

#[test]
fn the_assignment_id_is_deterministic() {
    fn assign(tenant: &str, user: &str, event: &str, at: i64, desktop: bool) -> String {
        let mut r = run();
        r.feed_all([
            autoclaim_on(tenant, T0),
            inventory(tenant, PER_USER, 5, 0, T0),
            inventory(tenant, PREMIUM, 5, 0, T0),
            UserSpec::member(tenant, user).record(),
            PolicySpec::new(tenant, &format!("pol-{event}"), PER_USER, T0)
                .backup(PREMIUM)
                .record(),
        ]);
        let e = if desktop {
            Ev::desktop(tenant, event, user, at, K::GoPremiumSelected)
        } else {
            Ev::saved(tenant, event, user, at)
        };
        let d = r.decide(e);
        assert_outcome(&d, O::Assigned, R::Unspecified);
        d.assignment.unwrap().assignment_id
    }
    let id = assign(T, "u1", "e1", LIVE, false);
    let parsed = uuid::Uuid::parse_str(&id).expect("a UUID");
    assert_eq!(parsed.get_version_num(), 5, "{id}");
    // Same tenant, user and product: same id, whatever the event, time or policy.
    assert_eq!(assign(T, "u1", "other-event", LIVE + 5 * HOUR, false), id);
    // Any of the three differing: another id.
    let others = [
        assign(T, "u2", "e1", LIVE, false),
        assign("fabrikam", "u1", "e1", LIVE, false),
        assign(T, "u1", "e1", LIVE, true), // premium
    ];
    for other in &others {
        assert_ne!(other, &id);
    }
    assert_ne!(others[0], others[1]);
    assert_ne!(others[1], others[2]);
    assert_ne!(others[0], others[2]);
    // Ids built by concatenation must not collide: ("ab","c") vs ("a","bc").
    assert_ne!(
        assign("ab", "c", "e1", LIVE, false),
        assign("a", "bc", "e1", LIVE, false)
    );
}

// ---------------------------------------------------------------------------- decision fields

#[test]
fn a_decision_carries_the_event_and_the_assignment_its_trigger() {
    let mut r = tenant_with(&[both_products_policy()]);
    let at = LIVE + 1234;
    let d = r.decide(Ev::saved(T, "evt-x", "u1", at).kind(K::CloudFlowTurnedOn));
    let a = assert_assigned(&d, PER_USER, "pol");
    assert_eq!(d.tenant_id, T);
    assert_eq!(a.trigger_event_id, "evt-x");
    assert_eq!(a.trigger_kind, K::CloudFlowTurnedOn as i32);
    assert_eq!(a.occurred_at, Some(ts(at)));
    assert_eq!(a.policy_name, "policy pol");
    assert!(d.failure.is_none());
}
