//! Carbon-intensity feeds: read in the background, published as one atomic table that the
//! request path reads without locks.
//!
//! Feeds are tried in the configured order for each region; the first with a fresh value wins,
//! where a feed's value is the last one it delivered (so a feed that is down keeps serving its
//! last value until that is older than `stale_after`, then the next feed takes over). When no
//! feed has a fresh value, the last value used is kept and marked stale, and a region never
//! heard of gets `unknown_intensity`. A feed failing is
//! counted and logged; it never fails a request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aegis_carbon::trace::parse_rfc3339;
use aegis_carbon::Freshness;
use arc_swap::ArcSwap;
use tokio::sync::watch;

/// Every reason a feed failure is counted under: the series of
/// `aegis_carbon_feed_errors_total` created at start for each configured feed.
pub const FEED_ERROR_REASONS: &[&str] = &[
    "unreadable",
    "unreachable",
    "timeout",
    "bad_request",
    "body",
    "http_status",
    "rate_limited",
    "unauthorized",
    "malformed_json",
    "malformed_csv",
    "unknown_zone",
    "wrong_zone",
    "wrong_basis",
    "unexpected_units",
    "null_value",
    "not_finite",
    "negative",
    "implausible",
];

mod api;
mod carbon_aware_sdk;
mod electricitymaps;
mod file;
mod uk;
mod watttime;

use crate::config::{CarbonConfig, FeedKind, RegionConfig};
use crate::metrics::{FeedErrorLabels, Metrics, RegionLabels, RegionSourceLabels};

/// One region's current intensity.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionIntensity {
    /// gCO2eq/kWh.
    pub intensity: f64,
    /// Where it came from: `file`, `electricitymaps`, `static` or `unknown`.
    pub source: &'static str,
    /// When the value was measured, when known.
    pub measured: Option<SystemTime>,
    /// Whether it may be trusted for ranking.
    pub freshness: Freshness,
    /// The provider marked the value as estimated (or it is a forecast).
    pub estimated: bool,
}

/// Readings above this many gCO2eq/kWh are rejected: the dirtiest grids (lignite and oil) stay
/// well under it, on any signal and basis, so a larger number is a unit or provider error.
pub const MAX_PLAUSIBLE_INTENSITY: f64 = 2_000.0;

/// Whether a reading may be used: `Err` names why not (for the feed-error counter).
pub fn check_plausible(intensity: f64) -> Result<(), &'static str> {
    if !intensity.is_finite() {
        Err("not_finite")
    } else if intensity < 0.0 {
        Err("negative")
    } else if intensity > MAX_PLAUSIBLE_INTENSITY {
        Err("implausible")
    } else {
        Ok(())
    }
}

/// Every region's intensity, indexed like [`crate::Config::regions`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IntensityTable {
    /// Per region.
    pub regions: Vec<RegionIntensity>,
}

/// The feeds of one proxy and the table they publish.
#[derive(Debug)]
pub struct CarbonFeeds {
    table: ArcSwap<IntensityTable>,
    /// What refreshes have published; held while one publishes.
    known: Mutex<Known>,
    /// How many refreshes have started: each takes the next number as its ticket.
    refreshes: AtomicU64,
    electricitymaps: Option<electricitymaps::ElectricityMaps>,
    uk: Option<uk::UkCarbonIntensity>,
    watttime: Option<watttime::WattTime>,
    carbon_aware_sdk: Option<carbon_aware_sdk::CarbonAwareSdk>,
    config: CarbonConfig,
    regions: Vec<RegionConfig>,
    metrics: Arc<Metrics>,
}

/// What refreshes have published so far.
#[derive(Debug, Default)]
struct Known {
    /// The last value each feed delivered for each key.
    readings: HashMap<FeedKind, Reading>,
    /// The ticket of the refresh that published last.
    published: u64,
}

/// One value a feed read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// gCO2eq/kWh, as the provider sent it (checked by [`check_plausible`] before use).
    pub(crate) intensity: f64,
    /// When it was measured (or, for a forecast, the period it is for).
    pub(crate) measured: SystemTime,
    /// The provider marked it as estimated, or it is a forecast.
    pub(crate) estimated: bool,
}

impl Sample {
    /// A measured (not estimated) value.
    pub(crate) fn measured(intensity: f64, measured: SystemTime) -> Self {
        Self {
            intensity,
            measured,
            estimated: false,
        }
    }
}

/// Values one feed read, by zone.
pub(crate) type Reading = HashMap<String, Sample>;

/// Parses one response body (or file) exactly as `feed` does, and returns the intensities it
/// found. Exposed for the fuzz targets: network input must give an error, never a panic.
pub fn parse_feed_response(feed: FeedKind, body: &[u8]) -> Result<Vec<f64>, &'static str> {
    let now = SystemTime::now();
    let value = |v: Option<Sample>| v.map(|sample| sample.intensity);
    Ok(match feed {
        FeedKind::Electricitymaps => {
            // One body is either a `latest` or a `forecast` answer: try both.
            let asked = electricitymaps::Asked {
                zone: "DE",
                basis: "lifecycle",
            };
            let latest = electricitymaps::parse_latest(body, &asked);
            let forecast = electricitymaps::parse_forecast(body, &asked, now);
            match (latest, forecast) {
                (Err(e), Err(_)) => return Err(e),
                (latest, forecast) => {
                    let latest = value(latest.ok().flatten());
                    latest
                        .into_iter()
                        .chain(value(forecast.ok().flatten()))
                        .collect()
                }
            }
        }
        FeedKind::Uk => value(uk::parse_regional(body)?).into_iter().collect(),
        FeedKind::Watttime => value(watttime::parse_forecast(body)?).into_iter().collect(),
        FeedKind::CarbonAwareSdk => carbon_aware_sdk::parse_bylocations(body, now)?
            .values()
            .map(|sample| sample.intensity)
            .collect(),
        FeedKind::File => {
            let text = std::str::from_utf8(body).map_err(|_| "not utf-8")?;
            let reading = match text.trim_start().starts_with('{') {
                true => file::parse_json(text, now)?,
                false => file::parse_csv(text, now)?,
            };
            reading.values().map(|sample| sample.intensity).collect()
        }
        FeedKind::Static => Vec::new(),
    })
}

impl CarbonFeeds {
    /// Builds the feeds and an initial table from static values (no I/O).
    pub fn new(config: CarbonConfig, regions: Vec<RegionConfig>, metrics: Arc<Metrics>) -> Self {
        let feeds = Self {
            table: ArcSwap::from_pointee(IntensityTable::default()),
            known: Mutex::new(Known::default()),
            refreshes: AtomicU64::new(0),
            electricitymaps: config
                .electricitymaps
                .as_ref()
                .map(electricitymaps::ElectricityMaps::new),
            uk: config.uk.as_ref().map(uk::UkCarbonIntensity::new),
            watttime: config.watttime.as_ref().map(watttime::WattTime::new),
            carbon_aware_sdk: config
                .carbon_aware_sdk
                .as_ref()
                .map(carbon_aware_sdk::CarbonAwareSdk::new),
            config,
            regions,
            metrics,
        };
        let table = feeds.merge(
            &HashMap::new(),
            &IntensityTable::default(),
            SystemTime::now(),
        );
        feeds.table.store(Arc::new(table));
        feeds
    }

    /// The current table (lock-free).
    pub fn current(&self) -> Arc<IntensityTable> {
        self.table.load_full()
    }

    /// The `[carbon]` settings these feeds run with.
    pub fn config(&self) -> &CarbonConfig {
        &self.config
    }

    /// The regions, as configured.
    pub fn regions(&self) -> &[RegionConfig] {
        &self.regions
    }

    /// Reads every feed now and publishes the merged table, unless a refresh that started
    /// later has already published (the timer's poll and a reload or test may overlap, and
    /// a slow feed must not put older readings back over newer ones).
    pub async fn refresh(&self) {
        let ticket = self.refreshes.fetch_add(1, Ordering::Relaxed) + 1;
        let mut readings = HashMap::new();
        if self.config.feeds.contains(&FeedKind::File) {
            if let Some(path) = &self.config.file {
                match file::read(path).await {
                    Ok(reading) => {
                        readings.insert(FeedKind::File, reading);
                    }
                    Err(reason) => self.feed_error("file", reason),
                }
            }
        }
        if let Some(api) = &self.electricitymaps {
            let zones: Vec<&str> = self.regions.iter().map(|r| r.zone.as_str()).collect();
            let (reading, errors) = api.read(&zones).await;
            for reason in errors {
                self.feed_error("electricitymaps", reason);
            }
            readings.insert(FeedKind::Electricitymaps, reading);
        }
        if let Some(api) = &self.uk {
            let ids: Vec<u32> = self.regions.iter().filter_map(|r| r.uk_region).collect();
            let (reading, errors) = api.read(&ids).await;
            for reason in errors {
                self.feed_error("uk", reason);
            }
            readings.insert(FeedKind::Uk, reading);
        }
        if let Some(api) = &self.watttime {
            let names: Vec<&str> = self
                .regions
                .iter()
                .filter_map(|r| r.watttime_region.as_deref())
                .collect();
            let (reading, errors) = api.read(&names).await;
            for reason in errors {
                self.feed_error("watttime", reason);
            }
            readings.insert(FeedKind::Watttime, reading);
        }
        if let Some(api) = &self.carbon_aware_sdk {
            let locations: Vec<&str> = self.regions.iter().map(sdk_location).collect();
            let (reading, errors) = api.read(&locations).await;
            for reason in errors {
                self.feed_error("carbon_aware_sdk", reason);
            }
            readings.insert(FeedKind::CarbonAwareSdk, reading);
        }
        self.publish(ticket, readings);
    }

    /// Drops the values no ranking may use (not finite, negative, implausible), counting each
    /// with its reason: one bad number must change nothing.
    fn keep_plausible(&self, feed: FeedKind, reading: &mut Reading) {
        reading.retain(|zone, sample| match check_plausible(sample.intensity) {
            Ok(()) => true,
            Err(reason) => {
                debug_assert!(FEED_ERROR_REASONS.contains(&reason), "{reason}");
                self.metrics
                    .carbon_feed_errors
                    .get_or_create(&FeedErrorLabels {
                        feed: feed.name(),
                        reason,
                    })
                    .inc();
                tracing::warn!(feed = feed.name(), zone = %zone, value = sample.intensity, reason, "carbon feed value rejected");
                false
            }
        });
    }

    fn publish(&self, ticket: u64, readings: HashMap<FeedKind, Reading>) {
        // Each reading is inserted whole, so even a lock poisoned by a panic holds valid data.
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if ticket < known.published {
            return;
        }
        known.published = ticket;
        for (feed, mut reading) in readings {
            self.keep_plausible(feed, &mut reading);
            known.readings.entry(feed).or_default().extend(reading);
        }
        let table = self.merge(&known.readings, &self.current(), SystemTime::now());
        self.export(&table);
        self.table.store(Arc::new(table));
    }

    /// Refreshes at `first_poll` and every `poll_interval` after it until `shutdown` turns true.
    pub async fn run(
        self: Arc<Self>,
        first_poll: tokio::time::Instant,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval_at(first_poll, self.config.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            self.refresh().await;
        }
    }

    fn merge(
        &self,
        readings: &HashMap<FeedKind, Reading>,
        previous: &IntensityTable,
        now: SystemTime,
    ) -> IntensityTable {
        let fresh = |measured: SystemTime| {
            now.duration_since(measured).unwrap_or(Duration::ZERO) <= self.config.stale_after
        };
        let regions = self
            .regions
            .iter()
            .enumerate()
            .map(|(i, region)| {
                for feed in &self.config.feeds {
                    let value = match feed {
                        FeedKind::Static => region
                            .intensity
                            .map(|v| (Sample::measured(v, now), "static")),
                        _ => feed_key(*feed, region)
                            .and_then(|key| readings.get(feed)?.get(&key))
                            .map(|&sample| (sample, feed.name())),
                    };
                    if let Some((sample, source)) = value.filter(|(s, _)| fresh(s.measured)) {
                        return RegionIntensity {
                            intensity: sample.intensity,
                            source,
                            measured: Some(sample.measured),
                            freshness: Freshness::Fresh,
                            estimated: sample.estimated,
                        };
                    }
                }
                // No fresh value: the newest any feed ever delivered, marked stale (also when
                // it was already stale at its first reading), else the table's last.
                let newest = self
                    .config
                    .feeds
                    .iter()
                    .filter_map(|&feed| {
                        let key = feed_key(feed, region)?;
                        let sample = readings.get(&feed)?.get(&key)?;
                        Some((*sample, feed.name()))
                    })
                    .max_by_key(|(sample, _)| sample.measured);
                if let Some((sample, source)) = newest {
                    return RegionIntensity {
                        intensity: sample.intensity,
                        source,
                        measured: Some(sample.measured),
                        freshness: Freshness::Stale,
                        estimated: sample.estimated,
                    };
                }
                match previous.regions.get(i).filter(|p| p.measured.is_some()) {
                    Some(last) => RegionIntensity {
                        freshness: if last.measured.is_some_and(fresh) {
                            Freshness::Fresh
                        } else {
                            Freshness::Stale
                        },
                        ..last.clone()
                    },
                    None => RegionIntensity {
                        intensity: self.config.unknown_intensity,
                        source: "unknown",
                        measured: None,
                        freshness: Freshness::Missing,
                        estimated: false,
                    },
                }
            })
            .collect();
        IntensityTable { regions }
    }

    fn export(&self, table: &IntensityTable) {
        let now = SystemTime::now();
        for (region, value) in self.regions.iter().zip(&table.regions) {
            // One series per region: drop the one of a source no longer in use.
            for source in SOURCES.iter().filter(|s| **s != value.source) {
                self.metrics.carbon_intensity.remove(&RegionSourceLabels {
                    region: region.name.clone(),
                    source,
                });
            }
            self.metrics
                .carbon_intensity
                .get_or_create(&RegionSourceLabels {
                    region: region.name.clone(),
                    source: value.source,
                })
                .set(value.intensity);
            if let Some(measured) = value.measured {
                let age = now.duration_since(measured).unwrap_or(Duration::ZERO);
                self.metrics
                    .carbon_data_age
                    .get_or_create(&RegionLabels {
                        region: Arc::from(region.name.as_str()),
                    })
                    .set(age.as_secs_f64());
            }
        }
    }

    fn feed_error(&self, feed: &'static str, reason: &'static str) {
        debug_assert!(FEED_ERROR_REASONS.contains(&reason), "{reason}");
        self.metrics
            .carbon_feed_errors
            .get_or_create(&FeedErrorLabels { feed, reason })
            .inc();
        tracing::warn!(feed, reason, "carbon feed failed; using fallback values");
    }
}

/// A JSON string timestamp (RFC 3339, UTC offsets allowed) as a `SystemTime`.
pub(crate) fn json_time(value: &serde_json::Value) -> Option<SystemTime> {
    let secs = parse_rfc3339(value.as_str()?)?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Every value of the `source` label.
const SOURCES: [&str; 7] = [
    "electricitymaps",
    "watttime",
    "uk",
    "carbon_aware_sdk",
    "file",
    "static",
    "unknown",
];

/// The key a feed's reading uses for `region`.
fn feed_key(feed: FeedKind, region: &RegionConfig) -> Option<String> {
    match feed {
        FeedKind::File | FeedKind::Electricitymaps => Some(region.zone.clone()),
        FeedKind::Uk => region.uk_region.map(uk::key),
        FeedKind::Watttime => region.watttime_region.as_deref().map(watttime::key),
        FeedKind::CarbonAwareSdk => Some(carbon_aware_sdk::key(sdk_location(region))),
        FeedKind::Static => None,
    }
}

/// The Carbon Aware SDK location of `region`: its `sdk_location`, else its zone.
fn sdk_location(region: &RegionConfig) -> &str {
    region.sdk_location.as_deref().unwrap_or(&region.zone)
}

/// Seconds since the Unix epoch, as RFC 3339 UTC (for writing test traces).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let stamp = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    debug_assert_eq!(parse_rfc3339(&stamp), Some(secs));
    stamp
}

/// H. Hinnant's civil_from_days.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Instant-free helper for tests: the current time as unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
