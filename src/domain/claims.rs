//! Pending claims and the notices for administrators they give rise to.
//!
//! A claim refused for want of a seat (NO_LICENSES_AVAILABLE) waits, per tenant, user and need, and
//! is decided again, oldest first, when seats may have become available. Pure types: the state that
//! keeps them is `state::claims`.
use std::time::Duration;

use super::activity::Activity;
use super::catalog::{Capabilities, ProductId};
use super::decision::Outcome;
use super::time::Timestamp;

/// How long a claim waits without another event for it (`--pending-claim-ttl`).
pub const DEFAULT_PENDING_CLAIM_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The least time between two SEATS_EXHAUSTED (or LOW_SEATS) notices of one tenant's product
/// (`--notice-digest-window`).
pub const DEFAULT_NOTICE_DIGEST_WINDOW: Duration = Duration::from_secs(3600);

/// The rules that pending claims and notices follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimRules {
    pub ttl: Duration,
    pub digest_window: Duration,
}

impl Default for ClaimRules {
    fn default() -> Self {
        ClaimRules {
            ttl: DEFAULT_PENDING_CLAIM_TTL,
            digest_window: DEFAULT_NOTICE_DIGEST_WINDOW,
        }
    }
}

/// A claim refused for want of a seat, waiting for one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingClaim {
    pub user_id: String,
    pub need: Capabilities,
    /// The first event refused; a re-decision decides it again at a later time.
    pub trigger: Activity,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Events for the need while pending, the first included.
    pub events: u32,
    /// The product last refused and its policy.
    pub product: Option<ProductId>,
    pub policy_id: Option<String>,
}

impl PendingClaim {
    pub fn expires_at(&self, rules: &ClaimRules) -> Timestamp {
        self.last_seen.saturating_add(rules.ttl)
    }
}

/// Where a claim stands after a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimStatus {
    Pending,
    /// Assigned; `again_from` as in the assignment's id (a product assigned a second time).
    Fulfilled {
        product: ProductId,
        again_from: Option<Timestamp>,
    },
    /// The user holds what the need requires.
    Entitled,
    /// The claim can no longer be granted; the outcome says why.
    NotEligible(Outcome),
    Expired,
}

/// One change of a claim: what is published on the claims topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimChange {
    pub tenant_id: String,
    pub claim: PendingClaim,
    pub status: ClaimStatus,
    /// The time of the event or record that caused the change.
    pub at: Timestamp,
    pub expires_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeKind {
    /// `digest` is false for the first refusal of a shortage.
    SeatsExhausted {
        digest: bool,
    },
    LowSeats {
        threshold: u32,
    },
    SeatsAvailableAgain {
        fulfilled: u32,
    },
}

/// A notice for a tenant's administrators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub tenant_id: String,
    pub kind: NoticeKind,
    pub product: ProductId,
    pub at: Timestamp,
    pub users_waiting: u32,
    pub seats_available: u64,
}

/// What an outcome does to a pending claim of the same user and need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimEffect {
    /// The claim is (or stays) pending.
    Refused,
    Fulfilled,
    /// The claim for this need ends. (Only this one: the user's claims for other needs are decided
    /// on their own, and one of them may be covered, which comes before eligibility.)
    Ends(ClaimStatus),
    None,
}

/// How `outcome` affects the user's pending claims.
pub fn effect_of(outcome: &Outcome) -> ClaimEffect {
    use super::decision::FailureReason;
    match outcome {
        Outcome::Failed(f) if f.reason == FailureReason::NoLicensesAvailable => {
            ClaimEffect::Refused
        }
        Outcome::Assigned(_) => ClaimEffect::Fulfilled,
        Outcome::AlreadyEntitled => ClaimEffect::Ends(ClaimStatus::Entitled),
        Outcome::NotEligible(_)
        | Outcome::Failed(_)
        | Outcome::AutoclaimOff
        | Outcome::NoPolicy
        | Outcome::OutOfScope => ClaimEffect::Ends(ClaimStatus::NotEligible(outcome.clone())),
        Outcome::NotRequired => ClaimEffect::None,
    }
}
