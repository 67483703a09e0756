//! What the policy reads: the state of every region and the settings of the policy.

/// How a cluster uses carbon data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Policy {
    /// Carbon plays no part: the caller's plain load balancing picks across all regions.
    #[default]
    Off,
    /// The lowest-intensity eligible region, with hysteresis.
    Greenest,
    /// Eligible regions share traffic with weights that fall as intensity rises.
    Weighted,
    /// The lowest-latency eligible region: carbon-blind, the baseline savings are measured
    /// against.
    Nearest,
}

/// How old a region's intensity value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Freshness {
    /// Within the feed's `stale_after`.
    Fresh,
    /// Older than `stale_after`: not trusted for ranking.
    Stale,
    /// No value was ever received; the configured `unknown_intensity` stands in.
    Missing,
}

/// One region as the policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionState {
    /// Grid carbon intensity in gCO2eq/kWh (or the configured stand-in when missing).
    pub intensity: f64,
    /// Age class of `intensity`.
    pub freshness: Freshness,
    /// At least one endpoint of the region can take requests.
    pub healthy: bool,
    /// Network latency to the region in milliseconds, measured by probes (or the configured
    /// prior before the first probe); `None` until there is an estimate. A region without one
    /// is never eligible: flexible traffic never goes somewhere on a guess.
    pub latency_ms: Option<f64>,
}

/// Every region of a cluster, read atomically by the request path.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// Regions in configuration order; [`Decision::region`] indexes this.
    pub regions: Vec<RegionState>,
}

/// Settings of a cluster's carbon policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// Off, greenest, weighted or nearest.
    pub policy: Policy,
    /// A region is eligible when its latency is within this many ms of the fastest healthy one.
    pub latency_budget_ms: f64,
    /// Largest fraction of recent traffic any one region may take (capacity); 1.0 = no cap.
    pub max_share: f64,
    /// Greenest keeps the current region unless another is greener by more than this
    /// fraction (0.1 = 10 %), so that two close regions do not flap.
    pub hysteresis: f64,
    /// Exponent of the weighted policy: weight = (min intensity / intensity) ^ exponent.
    pub weight_exponent: f64,
}

impl PolicyConfig {
    /// The latency budgets a policy accepts, in ms.
    pub const LATENCY_BUDGET_MS: std::ops::RangeInclusive<f64> = 0.0..=60_000.0;
    /// The capacity caps a policy accepts (fraction of traffic).
    pub const MAX_SHARE: std::ops::RangeInclusive<f64> = 0.01..=1.0;
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            policy: Policy::Greenest,
            latency_budget_ms: 50.0,
            max_share: 1.0,
            hysteresis: 0.1,
            weight_exponent: 2.0,
        }
    }
}

/// What the policy needs to know about the request and recent traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestFacts<'a> {
    /// Recent fraction of the cluster's traffic each region received (same order as the
    /// snapshot); empty when unknown.
    pub shares: &'a [f64],
    /// The region chosen for the previous request, for hysteresis.
    pub current: Option<usize>,
    /// A uniform random number in [0, 1), for the weighted policy.
    pub random: f64,
}

/// Requests over which each region's traffic share is smoothed (for `max_share`); the proxy and
/// the simulator both use it, so simulated caps behave as the proxy's do.
pub const SHARE_WINDOW: f64 = 100.0;

/// Moves the shares one request towards `chosen` (an exponentially weighted moving average
/// over [`SHARE_WINDOW`] requests).
pub fn record_share(shares: &mut [f64], chosen: usize) {
    for (i, share) in shares.iter_mut().enumerate() {
        *share = next_share(*share, i == chosen);
    }
}

/// One region's share after one more request, which it served (`hit`) or not.
pub fn next_share(share: f64, hit: bool) -> f64 {
    let target = if hit { 1.0 } else { 0.0 };
    share + (target - share) / SHARE_WINDOW
}
