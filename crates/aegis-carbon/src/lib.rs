//! Carbon-aware region selection: which region should serve the next request?
//!
//! Shaped like a sans-IO protocol crate: no networking, no clock reads, no randomness of its
//! own. Callers pass in a [`Snapshot`] (intensity, health and latency of every region), the
//! [`RequestFacts`] of the request (recent traffic shares, the region chosen last, a random
//! number) and get back a [`Decision`] that explains itself. Missing or stale data is a kind of
//! decision ([`Reason::Fallback`]), never an error: a carbon feed being down must not fail a
//! request.
//!
//! [`trace`] and [`simulate`] replay hourly intensity traces through the same [`decide`].

mod decide;
pub mod energy;
pub mod latency;
pub mod simulate;
mod snapshot;
pub mod trace;

pub use decide::{
    decide, eligibility, fastest_healthy_latency, weighted_probabilities, Decision, Eligibility,
    FallbackReason, Reason, MAX_REGIONS,
};
pub use snapshot::{
    next_share, record_share, Freshness, Policy, PolicyConfig, RegionState, RequestFacts, Snapshot,
    SHARE_WINDOW,
};
