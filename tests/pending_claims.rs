//! Pending claims (issue 16): a claim refused for want of a seat waits and is decided again, oldest
//! first, when seats may have become available; it ends when the user becomes entitled, stops being
//! eligible, or expires; and the notices for administrators that go with it. Driven through
//! `Replayer`, which applies the same state and engine as `run`.
mod support;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use autoclaim::domain::claims::ClaimRules;
use autoclaim::replay::Replayer;
use autoclaim::wire::pb;
use pb::{ClaimStatus as S, NoticeKind as N, Outcome as O, Reason as R};
use proptest::prelude::*;
use support::*;

const T: &str = "contoso";
const DELAY: i64 = HOUR;
const LIVE: i64 = T0 + 2 * HOUR;

/// Autoclaim on, a per-user policy, members u1..u9 and `seats` per-user seats as of T0.
fn tenant(seats: u64) -> Run {
    let mut r = Run::new(delay_ms(DELAY));
    r.feed(autoclaim_on(T, T0));
    r.feed(PolicySpec::new(T, "pol", PER_USER, T0).record());
    r.feed(inventory(T, PER_USER, seats, 0, T0));
    for i in 1..10 {
        r.feed(UserSpec::member(T, &format!("u{i}")).record());
    }
    r
}

fn claim(d: &pb::Decision) -> &pb::LicenseClaim {
    assert_eq!(d.claims.len(), 1, "{d:?}");
    &d.claims[0]
}

fn status(c: &pb::LicenseClaim) -> S {
    S::try_from(c.status).unwrap()
}

fn kinds(d: &pb::Decision) -> Vec<N> {
    d.notices
        .iter()
        .map(|n| N::try_from(n.kind).unwrap())
        .collect()
}

/// The case: no seat, three users refused in order; a snapshot adds two seats: exactly the
/// two oldest are assigned, at the snapshot's time, each saying since when it waited; the third
/// stays pending.
#[test]
fn a_snapshot_with_two_seats_assigns_exactly_the_two_oldest_claims() {
    let mut r = tenant(0);
    for (i, user) in ["u3", "u1", "u2"].into_iter().enumerate() {
        let at = LIVE + i as i64 * MIN;
        let d = r.decide(Ev::saved(T, &format!("e{i}"), user, at));
        assert_no_licences(&d);
        let f = d.failure.as_ref().unwrap();
        assert_eq!(f.pending_since, Some(ts(at)), "{d:?}");
        let c = claim(&d);
        assert_eq!(
            (status(c), c.events, c.first_seen),
            (S::Pending, 1, Some(ts(at)))
        );
        assert_eq!(c.needs, ["premium_cloud_flows"]);
        assert_eq!(c.trigger.as_ref().unwrap().event_id, format!("e{i}"));
    }
    let snapshot_at = LIVE + 10 * MIN;
    let lines = r.feed_redeciding(inventory(T, PER_USER, 2, 0, snapshot_at));
    let assigned: Vec<(&str, Option<pbjson_types::Timestamp>)> = lines
        .iter()
        .map(|d| {
            let a = assert_assigned(d, PER_USER, "pol");
            assert_eq!(
                a.occurred_at,
                Some(ts(snapshot_at)),
                "decided at the snapshot's time"
            );
            assert_eq!(status(claim(d)), S::Fulfilled);
            assert_eq!(claim(d).assignment_id, a.assignment_id);
            (d.subject_user_id.as_str(), a.pending_since)
        })
        .collect();
    assert_eq!(
        assigned,
        [("u3", Some(ts(LIVE))), ("u1", Some(ts(LIVE + MIN)))],
        "oldest first"
    );
    // The seats went to the waiting claims; the same snapshot again changes nothing.
    assert!(r
        .feed_redeciding(inventory(T, PER_USER, 2, 0, snapshot_at))
        .is_empty());
    // u2 still waits: a later event of theirs counts towards the same claim.
    let d = r.decide(Ev::saved(T, "e9", "u2", LIVE + 20 * MIN));
    assert_no_licences(&d);
    let c = claim(&d);
    assert_eq!((status(c), c.events), (S::Pending, 2));
    assert_eq!(c.first_seen, Some(ts(LIVE + 2 * MIN)), "first seen is kept");
    assert_eq!(c.last_seen, Some(ts(LIVE + 20 * MIN)));
    assert_eq!(
        c.trigger.as_ref().unwrap().event_id,
        "e2",
        "the first event is kept"
    );
}

#[test]
fn a_policy_with_a_backup_coming_into_force_serves_waiting_claims_at_its_time() {
    let mut r = tenant(0);
    r.feed(inventory(T, PREMIUM, 5, 0, T0));
    assert_no_licences(&r.decide(Ev::saved(T, "e1", "u1", LIVE)));
    // Premium as a backup, changed at LIVE + 1 min: in force an hour later.
    let in_force = LIVE + MIN + DELAY;
    r.feed(
        PolicySpec::new(T, "pol", PER_USER, T0)
            .backup(PREMIUM)
            .changed_at(LIVE + MIN)
            .record(),
    );
    // An event of the tenant after that time decides the waiting claim first, at that time.
    let lines =
        r.0.apply(Ev::saved(T, "e2", "u2", in_force + MIN).record())
            .unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let a = assert_assigned(&lines[0], PREMIUM, "pol");
    assert_eq!(
        (lines[0].subject_user_id.as_str(), a.occurred_at),
        ("u1", Some(ts(in_force)))
    );
    assert_assigned(&lines[1], PREMIUM, "pol");
    assert_eq!(lines[1].subject_user_id, "u2");
}

#[test]
fn a_claim_ends_when_the_directory_shows_the_user_entitled() {
    let mut r = tenant(0);
    assert_no_licences(&r.decide(Ev::saved(T, "e1", "u1", LIVE)));
    let lines = r.feed_redeciding(
        UserSpec::member(T, "u1")
            .licence(PREMIUM_SKU, &[])
            .taken_at(LIVE + MIN)
            .record(),
    );
    let [d] = &lines[..] else { panic!("{lines:?}") };
    assert_outcome(d, O::AlreadyEntitled, R::Unspecified);
    assert_eq!(status(claim(d)), S::EndedEntitled);
    assert!(d.assignment.is_none() && d.failure.is_none(), "{d:?}");
}

#[test]
fn a_claim_ends_when_the_user_is_no_longer_eligible() {
    let mut r = tenant(0);
    assert_no_licences(&r.decide(Ev::saved(T, "e1", "u1", LIVE)));
    let lines = r.feed_redeciding(
        UserSpec::member(T, "u1")
            .disabled()
            .taken_at(LIVE + MIN)
            .record(),
    );
    let [d] = &lines[..] else { panic!("{lines:?}") };
    let c = claim(d);
    assert_eq!(status(c), S::EndedNotEligible);
    assert_eq!(
        (c.ended_outcome, c.ended_reason),
        (O::NotEligible as i32, R::AccountDisabled as i32)
    );
    // A seat now finds no one waiting.
    assert!(r
        .feed_redeciding(inventory(T, PER_USER, 1, 0, LIVE + 2 * MIN))
        .is_empty());
}

#[test]
fn a_claim_without_events_for_its_time_expires_by_the_tenants_own_time() {
    let rules = ClaimRules {
        ttl: Duration::from_secs(3600),
        digest_window: Duration::from_secs(3600),
    };
    let mut r = Run(Replayer::new(delay_ms(DELAY)).with_claim_rules(rules));
    r.feed_all([
        autoclaim_on(T, T0),
        PolicySpec::new(T, "pol", PER_USER, T0).record(),
        inventory(T, PER_USER, 0, 0, T0),
        UserSpec::member(T, "u1").record(),
        UserSpec::member(T, "u2").record(),
    ]);
    assert_no_licences(&r.decide(Ev::saved(T, "e1", "u1", LIVE)));
    assert_no_licences(&r.decide(Ev::saved(T, "e2", "u1", LIVE + 30 * MIN)));
    // Another user's event two hours on: u1's claim ran out 1 h after its last event.
    let lines =
        r.0.apply(Ev::saved(T, "e3", "u2", LIVE + 150 * MIN).record())
            .unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let c = claim(&lines[0]);
    assert_eq!((status(c), c.user_id.as_str()), (S::Expired, "u1"));
    assert_eq!(c.changed_at, Some(ts(LIVE + 90 * MIN)), "at its own expiry");
    assert_no_licences(&lines[1]);
    // A seat now goes to u2 only.
    let lines = r.feed_redeciding(inventory(T, PER_USER, 1, 0, LIVE + 151 * MIN));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].subject_user_id, "u2");
}

#[test]
fn seats_exhausted_is_sent_on_the_first_refusal_then_as_a_digest_at_most_once_an_hour() {
    let mut r = tenant(0);
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_eq!(kinds(&d), [N::SeatsExhausted]);
    assert!(!d.notices[0].digest);
    assert_eq!(
        (d.notices[0].users_waiting, d.notices[0].product.as_str()),
        (1, PER_USER)
    );
    let d = r.decide(Ev::saved(T, "e2", "u2", LIVE + 30 * MIN));
    assert!(d.notices.is_empty(), "within the window: {d:?}");
    let d = r.decide(Ev::saved(T, "e3", "u3", LIVE + 60 * MIN));
    assert_eq!(kinds(&d), [N::SeatsExhausted]);
    assert!(d.notices[0].digest);
    assert_eq!(d.notices[0].users_waiting, 3);
    // Seats come: the claims are fulfilled and the administrators hear so, once.
    let lines = r.feed_redeciding(inventory(T, PER_USER, 2, 0, LIVE + 70 * MIN));
    assert_eq!(lines.len(), 2);
    let last = lines.last().unwrap();
    assert_eq!(kinds(last), [N::SeatsAvailableAgain]);
    let n = &last.notices[0];
    assert_eq!(
        (n.claims_fulfilled, n.users_waiting, n.seats_available),
        (2, 1, 0)
    );
    // The next refusal is the first of a new shortage.
    let d = r.decide(Ev::saved(T, "e4", "u4", LIVE + 71 * MIN));
    assert_eq!(kinds(&d), [N::SeatsExhausted]);
    assert!(!d.notices[0].digest);
    assert_ne!(d.notices[0].notice_id, "");
}

#[test]
fn low_seats_is_sent_when_an_assignment_leaves_the_threshold_or_fewer() {
    let mut r = tenant(4);
    let mut settings = autoclaim_on(T, T0 + MIN);
    if let Some(pb::replay_record::Record::Settings(s)) = settings.record.as_mut() {
        s.low_seats_threshold = 2;
    }
    r.feed(settings);
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert!(d.notices.is_empty(), "3 left: {d:?}");
    let d = r.decide(Ev::saved(T, "e2", "u2", LIVE + MIN));
    assert_eq!(kinds(&d), [N::LowSeats]);
    assert_eq!(
        (
            d.notices[0].seats_available,
            d.notices[0].low_seats_threshold
        ),
        (2, 2)
    );
    let d = r.decide(Ev::saved(T, "e3", "u3", LIVE + 2 * MIN));
    assert!(d.notices.is_empty(), "already below, from below: {d:?}");
}

// ------------------------------------------------------------------------------- properties

/// One step of a tenant whose members are all alike: an event of a user, or a new snapshot.
#[derive(Clone, Debug)]
enum Step {
    Event { user: usize },
    Snapshot { purchased: u64, assigned: u64 },
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        4 => (0..8usize).prop_map(|user| Step::Event { user }),
        1 => (0..6u64, 0..3u64).prop_map(|(purchased, assigned)| Step::Snapshot { purchased, assigned }),
    ];
    prop::collection::vec(step, 1..60)
}

/// What the steps gave: every line, with its step.
fn run_steps(steps: &[Step]) -> Vec<(usize, pb::Decision)> {
    let mut r = tenant(0);
    let mut out = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let at = LIVE + i as i64 * MIN;
        let record = match step {
            Step::Event { user } => {
                Ev::saved(T, &format!("e{i}"), &format!("u{}", user + 1), at).record()
            }
            Step::Snapshot {
                purchased,
                assigned,
            } => inventory(T, PER_USER, *purchased, *assigned, at),
        };
        for d in r.0.apply(record).expect("accepted") {
            out.push((i, d));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Never over the seats of the newest snapshot, never twice to one user, and first come first
    /// served: a user is assigned only when no one refused before them still waits.
    #[test]
    fn waiting_claims_are_served_in_order_within_the_seats(steps in arb_steps()) {
        let lines = run_steps(&steps);
        let mut waiting: VecDeque<String> = VecDeque::new();
        let mut assigned: HashSet<String> = HashSet::new();
        let mut since_snapshot: Option<(u64, u64)> = Some((0, 0)); // (seats, used)
        let mut by_step: HashMap<usize, Vec<&pb::Decision>> = HashMap::new();
        for (i, d) in &lines {
            by_step.entry(*i).or_default().push(d);
        }
        for (i, step) in steps.iter().enumerate() {
            if let Step::Snapshot { purchased, assigned: taken } = step {
                since_snapshot = Some((purchased.saturating_sub(*taken), 0));
            }
            for d in by_step.remove(&i).unwrap_or_default() {
                let user = d.subject_user_id.clone();
                match O::try_from(d.outcome).unwrap() {
                    O::Assigned => {
                        prop_assert!(assigned.insert(user.clone()), "assigned twice: {:?}", d);
                        let (seats, used) = since_snapshot.as_mut().unwrap();
                        *used += 1;
                        prop_assert!(*used <= *seats, "over the seats: {:?}", d);
                        match waiting.iter().position(|w| *w == user) {
                            Some(0) => { waiting.pop_front(); }
                            Some(k) => prop_assert!(false, "{} served before {:?}", user, &waiting.as_slices().0[..k]),
                            None => prop_assert!(waiting.is_empty(), "{} served while {:?} wait", user, waiting),
                        }
                    }
                    O::Failed => {
                        prop_assert_eq!(d.reason, R::NoLicensesAvailable as i32);
                        if !waiting.contains(&user) {
                            waiting.push_back(user);
                        }
                    }
                    O::AlreadyEntitled => prop_assert!(assigned.contains(&user)),
                    other => prop_assert!(false, "unexpected {:?}: {:?}", other, d),
                }
            }
        }
    }

    /// The same records give the same lines, whatever else the replay saw before them of other
    /// tenants (claims are per tenant).
    #[test]
    fn claims_of_one_tenant_do_not_move_another(steps in arb_steps()) {
        let alone = run_steps(&steps);
        let mut r = tenant(0);
        r.feed(autoclaim_on("fabrikam", T0));
        r.feed(PolicySpec::new("fabrikam", "pol", PER_USER, T0).record());
        r.feed(UserSpec::member("fabrikam", "u1").record());
        assert_no_licences(&r.decide(Ev::saved("fabrikam", "f1", "u1", LIVE)));
        let mut mixed = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let at = LIVE + i as i64 * MIN;
            let record = match step {
                Step::Event { user } => Ev::saved(T, &format!("e{i}"), &format!("u{}", user + 1), at).record(),
                Step::Snapshot { purchased, assigned } => inventory(T, PER_USER, *purchased, *assigned, at),
            };
            for d in r.0.apply(record).expect("accepted") {
                mixed.push((i, d));
            }
        }
        prop_assert_eq!(alone, mixed);
    }
}

/// Two products' snapshots taken at the same time: the second frees seats too, although it brings
/// no later time than the first (re-decisions are due on a new inventory record, not only a later
/// time).
#[test]
fn a_second_snapshot_of_the_same_time_frees_its_seats_too() {
    let mut r = Run::new(delay_ms(DELAY));
    r.feed_all([
        autoclaim_on(T, T0),
        PolicySpec::new(T, "pol", PER_USER, T0).record(),
        PolicySpec::new(T, "rpa", PREMIUM, T0).record(),
        inventory(T, PER_USER, 0, 0, T0),
        inventory(T, PREMIUM, 0, 0, T0),
        UserSpec::member(T, "u1").record(),
        UserSpec::member(T, "u2").record(),
    ]);
    assert_no_licences(&r.decide(Ev::saved(T, "e1", "u1", LIVE)));
    assert_no_licences(&r.decide(Ev::saved(T, "e2", "u2", LIVE + MIN).rpa()));
    let at = LIVE + 10 * MIN;
    let per_user = r.feed_redeciding(inventory(T, PER_USER, 1, 0, at));
    assert_eq!(per_user.len(), 1, "{per_user:?}");
    assert_eq!(per_user[0].subject_user_id, "u1");
    let premium = r.feed_redeciding(inventory(T, PREMIUM, 1, 0, at));
    assert_eq!(premium.len(), 1, "{premium:?}");
    assert_eq!(premium[0].subject_user_id, "u2");
    assert_eq!(premium[0].product, PREMIUM);
}
