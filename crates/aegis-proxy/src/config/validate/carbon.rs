//! Validation of `[regions]`, `[carbon]` and each cluster's carbon policy.

use std::time::Duration;

use toml::Spanned;

use super::{
    Checker, DEFAULT_CARBON_POLL_MS, DEFAULT_CARBON_STALE_MS, DEFAULT_FEED_TIMEOUT_MS,
    DEFAULT_UNKNOWN_INTENSITY,
};
use crate::config::raw::{RawCarbon, RawCluster, RawRegion};
use crate::config::{
    ApiFeedConfig, Baseline, Basis, CarbonConfig, CarbonPolicyKind, ElectricityMapsConfig,
    FeedKind, RegionConfig, SdkFeedConfig, Signal, WattTimeConfig,
};

/// The region ids the UK Carbon Intensity API defines (1 North Scotland .. 17 Wales); 18 and
/// up are the nations, which the regional endpoint does not serve.
const UK_REGIONS: std::ops::RangeInclusive<u32> = 1..=17;
/// Default interval between latency probes of a carbon-aware cluster's regions.
const DEFAULT_PROBE_INTERVAL_MS: u64 = 10_000;
/// Default deadline of one latency probe.
const DEFAULT_PROBE_TIMEOUT_MS: u64 = 2_000;

impl Checker<'_> {
    pub(super) fn cluster_carbon(
        &mut self,
        key: &str,
        spanned: &Spanned<RawCluster>,
    ) -> Option<aegis_carbon::PolicyConfig> {
        let c = spanned.get_ref();
        let defaults = aegis_carbon::PolicyConfig::default();
        let kind = c.carbon.as_ref();
        let policy = match kind.map(Spanned::get_ref) {
            None | Some(CarbonPolicyKind::Off) => aegis_carbon::Policy::Off,
            Some(CarbonPolicyKind::Greenest) => aegis_carbon::Policy::Greenest,
            Some(CarbonPolicyKind::Weighted) => aegis_carbon::Policy::Weighted,
        };
        if let Some(kind) = kind.filter(|_| policy != aegis_carbon::Policy::Off) {
            if c.regions.is_none() {
                self.error(
                    format!("{key}.carbon"),
                    kind,
                    "a carbon policy needs endpoints grouped by regions: \
                     write regions = { REGION = [\"host:port\"] } instead of endpoints",
                );
                return None;
            }
        }
        let budget = self.float(
            &format!("{key}.latency_budget_ms"),
            &c.latency_budget_ms,
            defaults.latency_budget_ms,
            *aegis_carbon::PolicyConfig::LATENCY_BUDGET_MS.start(),
            *aegis_carbon::PolicyConfig::LATENCY_BUDGET_MS.end(),
        );
        let max_share = self.float(
            &format!("{key}.max_share"),
            &c.max_share,
            defaults.max_share,
            *aegis_carbon::PolicyConfig::MAX_SHARE.start(),
            *aegis_carbon::PolicyConfig::MAX_SHARE.end(),
        );
        let hysteresis = self.float(
            &format!("{key}.hysteresis"),
            &c.hysteresis,
            defaults.hysteresis,
            0.0,
            10.0,
        );
        Some(aegis_carbon::PolicyConfig {
            policy,
            latency_budget_ms: budget?,
            max_share: max_share?,
            hysteresis: hysteresis?,
            ..defaults
        })
    }

    pub(super) fn region(&mut self, name: &str, r: &Spanned<RawRegion>) -> Option<RegionConfig> {
        let key = format!("regions.{name}");
        let raw = r.get_ref();
        if raw.zone.get_ref().is_empty() {
            self.error(format!("{key}.zone"), &raw.zone, "must not be empty");
        }
        let intensity = match &raw.intensity {
            Some(v) => Some(self.float(
                &format!("{key}.intensity"),
                &Some(v.clone()),
                0.0,
                0.0,
                5000.0,
            )?),
            None => None,
        };
        let rtt_ms = match &raw.rtt_ms {
            Some(v) => Some(self.float(
                &format!("{key}.rtt_ms"),
                &Some(v.clone()),
                0.0,
                *aegis_carbon::PolicyConfig::LATENCY_BUDGET_MS.start(),
                *aegis_carbon::PolicyConfig::LATENCY_BUDGET_MS.end(),
            )?),
            None => None,
        };
        let uk_region = match &raw.uk_region {
            Some(id) if !UK_REGIONS.contains(id.get_ref()) => {
                self.error(
                    format!("{key}.uk_region"),
                    id,
                    format!(
                        "{} is not a UK Carbon Intensity region id (1..=17)",
                        id.get_ref()
                    ),
                );
                return None;
            }
            other => other.as_ref().map(|id| *id.get_ref()),
        };
        Some(RegionConfig {
            name: name.to_owned(),
            zone: raw.zone.get_ref().clone(),
            intensity,
            uk_region,
            watttime_region: raw.watttime_region.clone(),
            rtt_ms,
            sdk_location: raw.sdk_location.clone(),
        })
    }

    pub(super) fn carbon(&mut self, raw: Option<&RawCarbon>) -> Option<CarbonConfig> {
        let Some(c) = raw else {
            return Some(default_carbon());
        };
        if c.feeds.get_ref().is_empty() {
            self.error("carbon.feeds", &c.feeds, "must list at least one feed");
        }
        self.unused_feed_settings(c);
        let file = self.file_feed(c);
        let electricitymaps = self.electricitymaps(c);
        let uk = self.uk(c);
        let watttime = self.watttime(c);
        let carbon_aware_sdk = self.carbon_aware_sdk(c);
        let poll = self.duration(
            "carbon.poll_interval_ms",
            &c.poll_interval_ms,
            DEFAULT_CARBON_POLL_MS,
        );
        let stale = self.duration(
            "carbon.stale_after_ms",
            &c.stale_after_ms,
            DEFAULT_CARBON_STALE_MS,
        );
        let unknown = self.float(
            "carbon.unknown_intensity",
            &c.unknown_intensity,
            DEFAULT_UNKNOWN_INTENSITY,
            0.0,
            5000.0,
        );
        let energy = self.energy(c);
        let header = self.region_header(c);
        let probe_interval = self.duration(
            "carbon.probe_interval_ms",
            &c.probe_interval_ms,
            DEFAULT_PROBE_INTERVAL_MS,
        );
        let probe_timeout = self.duration(
            "carbon.probe_timeout_ms",
            &c.probe_timeout_ms,
            DEFAULT_PROBE_TIMEOUT_MS,
        );
        let config = CarbonConfig {
            feeds: c.feeds.get_ref().clone(),
            file,
            electricitymaps: electricitymaps?,
            uk: uk?,
            watttime: watttime?,
            carbon_aware_sdk: carbon_aware_sdk?,
            poll_interval: poll?,
            stale_after: stale?,
            unknown_intensity: unknown?,
            region_header: header?,
            energy: energy?,
            baseline: c.baseline.unwrap_or_default(),
            declared: (
                c.signal.unwrap_or(Signal::Average),
                c.basis.unwrap_or(Basis::Lifecycle),
            ),
            probe_interval: probe_interval?,
            probe_timeout: probe_timeout?,
        };
        self.one_quantity(&config, &c.feeds);
        Some(config)
    }

    /// Warns of each feed's settings whose feed `feeds` does not list: they are ignored, which
    /// is most likely a feed left out of the list by mistake.
    fn unused_feed_settings(&mut self, c: &RawCarbon) {
        let set = [
            (FeedKind::File, c.file.is_some()),
            (FeedKind::Electricitymaps, c.electricitymaps.is_some()),
            (FeedKind::Uk, c.uk.is_some()),
            (FeedKind::Watttime, c.watttime.is_some()),
            (FeedKind::CarbonAwareSdk, c.carbon_aware_sdk.is_some()),
        ];
        for (feed, _) in set.into_iter().filter(|(_, present)| *present) {
            if !c.feeds.get_ref().contains(&feed) {
                let name = feed.name();
                let message = format!(
                    "does not list \"{name}\", so carbon.{name} is ignored (add \"{name}\" to \
                     the feeds, or remove carbon.{name})"
                );
                self.warning("carbon.feeds", &c.feeds, message);
            }
        }
    }

    /// The `file` feed's path: an error when the feed is listed without one, a warning when
    /// the file does not exist (yet).
    fn file_feed(&mut self, c: &RawCarbon) -> Option<std::path::PathBuf> {
        match (&c.file, c.feeds.get_ref().contains(&FeedKind::File)) {
            (Some(f), _) => {
                let path = self.path(&f.path);
                if !path.exists() {
                    let message = format!(
                        "{} does not exist (yet): the file feed has no data until it does",
                        path.display()
                    );
                    self.warning("carbon.file.path", &f.path, message);
                }
                Some(path)
            }
            (None, true) => {
                self.error(
                    "carbon.feeds",
                    &c.feeds,
                    "the file feed needs carbon.file = { path = \"...\" }",
                );
                None
            }
            (None, false) => None,
        }
    }

    /// The energy model: watt-hours per request and per megabyte.
    fn energy(&mut self, c: &RawCarbon) -> Option<aegis_carbon::energy::EnergyModel> {
        let defaults = aegis_carbon::energy::EnergyModel::default();
        let wh_request = self.float(
            "carbon.wh_per_request",
            &c.wh_per_request,
            defaults.wh_per_request,
            0.0,
            1e6,
        );
        let wh_mb = self.float(
            "carbon.wh_per_mb",
            &c.wh_per_mb,
            defaults.wh_per_mb,
            0.0,
            1e6,
        );
        Some(aegis_carbon::energy::EnergyModel {
            wh_per_request: wh_request?,
            wh_per_mb: wh_mb?,
        })
    }

    /// The response header that names the chosen region: `None` inside when set empty.
    fn region_header(&mut self, c: &RawCarbon) -> Option<Option<http::HeaderName>> {
        match &c.region_header {
            Some(h) if h.get_ref().is_empty() => Some(None),
            Some(h) => match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(name) => Some(Some(name)),
                Err(_) => {
                    self.error(
                        "carbon.region_header",
                        h,
                        format!("\"{}\" is not a header name", h.get_ref()),
                    );
                    None
                }
            },
            None => Some(Some(http::HeaderName::from_static("x-aegis-region"))),
        }
    }

    /// Rejects a feed chain that would rank regions on different quantities: each region takes
    /// its value from the first feed that has one, so a mixed chain compares, say, an average
    /// life-cycle figure with a marginal direct one.
    fn one_quantity(&mut self, config: &CarbonConfig, feeds: &Spanned<Vec<FeedKind>>) {
        let Some(&first) = config.feeds.first() else {
            return;
        };
        let describe = |feed: FeedKind| {
            let (signal, basis) = config.quantity(feed);
            format!("{} reports {} {}", feed.name(), signal.name(), basis.name())
        };
        if let Some(&other) = config
            .feeds
            .iter()
            .find(|&&f| config.quantity(f) != config.quantity(first))
        {
            self.error(
                "carbon.feeds",
                feeds,
                format!(
                    "feeds of different kinds would be ranked together: {}, {}; list feeds of one \
                     signal and basis (set carbon.signal and carbon.basis for file and static \
                     values, carbon.electricitymaps.basis for Electricity Maps)",
                    describe(first),
                    describe(other)
                ),
            );
        }
    }

    /// Base URL (checked, or `default`) and timeout of an API feed.
    pub(super) fn api_feed(
        &mut self,
        key: &str,
        base_url: Option<&Spanned<String>>,
        timeout_ms: Option<&Spanned<u64>>,
        default: &str,
    ) -> Option<ApiFeedConfig> {
        let url = base_url
            .map_or(default, |u| u.get_ref().as_str())
            .to_owned();
        let valid = url
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !valid {
            if let Some(spanned) = base_url {
                self.error(
                    format!("{key}.base_url"),
                    spanned,
                    format!("\"{url}\" is not an http(s) URL"),
                );
            }
            return None;
        }
        let timeout = self.duration(
            &format!("{key}.timeout_ms"),
            &timeout_ms.cloned(),
            DEFAULT_FEED_TIMEOUT_MS,
        )?;
        Some(ApiFeedConfig {
            base_url: url,
            timeout,
        })
    }

    pub(super) fn uk(&mut self, c: &RawCarbon) -> Option<Option<ApiFeedConfig>> {
        if !c.feeds.get_ref().contains(&FeedKind::Uk) {
            return Some(None);
        }
        let raw = c.uk.as_ref();
        let api = self.api_feed(
            "carbon.uk",
            raw.and_then(|r| r.base_url.as_ref()),
            raw.and_then(|r| r.timeout_ms.as_ref()),
            "https://api.carbonintensity.org.uk",
        )?;
        Some(Some(api))
    }

    pub(super) fn carbon_aware_sdk(&mut self, c: &RawCarbon) -> Option<Option<SdkFeedConfig>> {
        if !c.feeds.get_ref().contains(&FeedKind::CarbonAwareSdk) {
            return Some(None);
        }
        let Some(raw) = c.carbon_aware_sdk.as_ref() else {
            self.error(
                "carbon.feeds",
                &c.feeds,
                "the carbon_aware_sdk feed needs carbon.carbon_aware_sdk = { base_url = \"...\", signal = \"...\", basis = \"...\" }",
            );
            return None;
        };
        let api = self.api_feed(
            "carbon.carbon_aware_sdk",
            Some(&raw.base_url),
            raw.timeout_ms.as_ref(),
            "",
        )?;
        Some(Some(SdkFeedConfig {
            api,
            signal: raw.signal,
            basis: raw.basis,
        }))
    }

    pub(super) fn watttime(&mut self, c: &RawCarbon) -> Option<Option<WattTimeConfig>> {
        if !c.feeds.get_ref().contains(&FeedKind::Watttime) {
            return Some(None);
        }
        let raw = c.watttime.as_ref();
        let api = self.api_feed(
            "carbon.watttime",
            raw.and_then(|r| r.base_url.as_ref()),
            raw.and_then(|r| r.timeout_ms.as_ref()),
            "https://api.watttime.org",
        )?;
        let username_env = raw
            .and_then(|r| r.username_env.clone())
            .unwrap_or_else(|| "WATTTIME_USERNAME".to_owned());
        let password_env = raw
            .and_then(|r| r.password_env.clone())
            .unwrap_or_else(|| "WATTTIME_PASSWORD".to_owned());
        let user = self.secret_set("carbon.watttime.username_env", &username_env, &c.feeds);
        let password = self.secret_set("carbon.watttime.password_env", &password_env, &c.feeds);
        user.zip(password)?;
        Some(Some(WattTimeConfig {
            api,
            username_env,
            password_env,
        }))
    }

    /// Checks that the environment variable a feed reads its credential from is set: an unset
    /// one would make the feed poll unauthenticated and fail at every poll.
    fn secret_set(
        &mut self,
        key: &str,
        variable: &str,
        feeds: &Spanned<Vec<FeedKind>>,
    ) -> Option<()> {
        if (self.env)(variable).is_some_and(|v| !v.is_empty()) {
            return Some(());
        }
        self.error(
            key.to_owned(),
            feeds,
            format!(
                "environment variable {variable} is not set (the feed needs it to authenticate)"
            ),
        );
        None
    }

    pub(super) fn electricitymaps(
        &mut self,
        c: &RawCarbon,
    ) -> Option<Option<ElectricityMapsConfig>> {
        let wanted = c.feeds.get_ref().contains(&FeedKind::Electricitymaps);
        let raw = match (&c.electricitymaps, wanted) {
            (_, false) => return Some(None),
            (Some(raw), true) => Some(raw),
            (None, true) => None,
        };
        let base_url = raw
            .and_then(|r| r.base_url.clone())
            .map(|u| (u.get_ref().clone(), Some(u)))
            .unwrap_or_else(|| ("https://api.electricitymaps.com".to_owned(), None));
        let uri_ok = base_url
            .0
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !uri_ok {
            if let Some(spanned) = &base_url.1 {
                self.error(
                    "carbon.electricitymaps.base_url",
                    spanned,
                    format!("\"{}\" is not an http(s) URL", base_url.0),
                );
            }
            return None;
        }
        let timeout = self.duration(
            "carbon.electricitymaps.timeout_ms",
            &raw.and_then(|r| r.timeout_ms.clone()),
            DEFAULT_FEED_TIMEOUT_MS,
        )?;
        let token_env = raw
            .and_then(|r| r.token_env.clone())
            .unwrap_or_else(|| "ELECTRICITYMAPS_TOKEN".to_owned());
        self.secret_set("carbon.electricitymaps.token_env", &token_env, &c.feeds)?;
        Some(Some(ElectricityMapsConfig {
            base_url: base_url.0,
            token_env,
            timeout,
            basis: raw.and_then(|r| r.basis).unwrap_or(Basis::Lifecycle),
        }))
    }

    pub(super) fn float(
        &mut self,
        key: &str,
        v: &Option<Spanned<f64>>,
        default: f64,
        min: f64,
        max: f64,
    ) -> Option<f64> {
        let Some(spanned) = v else {
            return Some(default);
        };
        let value = *spanned.get_ref();
        if value.is_finite() && (min..=max).contains(&value) {
            return Some(value);
        }
        self.error(
            key.to_owned(),
            spanned,
            format!("{value} is outside {min}..={max}"),
        );
        None
    }
}

#[cfg(test)]
mod tests;

/// The carbon settings of a file without `[carbon]`.
/// `[carbon]` when the file has none.
pub(in crate::config) fn default_carbon() -> CarbonConfig {
    CarbonConfig {
        feeds: vec![FeedKind::Static],
        file: None,
        electricitymaps: None,
        uk: None,
        watttime: None,
        carbon_aware_sdk: None,
        poll_interval: Duration::from_millis(DEFAULT_CARBON_POLL_MS),
        stale_after: Duration::from_millis(DEFAULT_CARBON_STALE_MS),
        unknown_intensity: DEFAULT_UNKNOWN_INTENSITY,
        region_header: Some(http::HeaderName::from_static("x-aegis-region")),
        energy: aegis_carbon::energy::EnergyModel::default(),
        baseline: Baseline::default(),
        declared: (Signal::Average, Basis::Lifecycle),
        probe_interval: Duration::from_millis(DEFAULT_PROBE_INTERVAL_MS),
        probe_timeout: Duration::from_millis(DEFAULT_PROBE_TIMEOUT_MS),
    }
}
