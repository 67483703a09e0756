//! The `watttime` feed: WattTime API v3. `GET /login` with HTTP basic auth gives a bearer token
//! (valid 30 minutes, renewed after 25 or on a 401); `GET /v3/forecast?region=R&signal_type=co2_moer`
//! gives marginal emissions in lbs CO2/MWh, converted to gCO2/kWh. The first forecast point
//! (the current five minutes) is used. Credentials come from environment variables. A 429
//! pauses the feed for `Retry-After` seconds; an answer without `meta.units` is rejected.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::StatusCode;

use super::api::{ApiClient, Backoff};
use super::{Reading, Sample};
use crate::config::WattTimeConfig;

/// Grams per pound; lbs/MWh times this over 1000 kWh/MWh is g/kWh.
const GRAMS_PER_POUND: f64 = 453.592_37;
/// Tokens live 30 minutes; renew before that.
const TOKEN_LIFETIME: Duration = Duration::from_secs(25 * 60);

/// A client of the WattTime API.
#[derive(Debug)]
pub(super) struct WattTime {
    api: ApiClient,
    basic: Option<String>,
    token: Mutex<Option<(String, Instant)>>,
    backoff: Backoff,
}

impl WattTime {
    pub(super) fn new(config: &WattTimeConfig) -> Self {
        let user = std::env::var(&config.username_env).ok();
        let password = std::env::var(&config.password_env).ok();
        let basic = user.zip(password).map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        Self {
            api: ApiClient::new(&config.api.base_url, config.api.timeout),
            basic,
            token: Mutex::new(None),
            backoff: Backoff::default(),
        }
    }

    /// Current marginal intensity of each WattTime region; keys are `wt:{region}`.
    pub(super) async fn read(&self, regions: &[&str]) -> (Reading, Vec<&'static str>) {
        let mut reading = Reading::new();
        let mut errors = Vec::new();
        if self.backoff.paused() {
            return (reading, vec!["rate_limited"]);
        }
        for region in regions {
            match self.forecast(region).await {
                Ok(Some(value)) => {
                    reading.insert(key(region), value);
                }
                Ok(None) => errors.push("null_value"),
                Err("rate_limited") => {
                    errors.push("rate_limited");
                    break;
                }
                Err(reason) => errors.push(reason),
            }
        }
        (reading, errors)
    }

    async fn forecast(&self, region: &str) -> Result<Option<Sample>, &'static str> {
        let path = format!("/v3/forecast?region={region}&signal_type=co2_moer");
        for attempt in 0..2 {
            let token = self.token(attempt > 0).await?;
            let bearer = format!("Bearer {token}");
            let response = self.api.get(&path, &[("authorization", &bearer)]).await?;
            match response.status {
                StatusCode::OK => return parse_forecast(&response.body),
                // An expired token: log in again once.
                StatusCode::UNAUTHORIZED if attempt == 0 => continue,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err("unauthorized"),
                StatusCode::TOO_MANY_REQUESTS => {
                    self.backoff.pause(&response.headers);
                    return Err("rate_limited");
                }
                StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => return Err("unknown_zone"),
                _ => return Err("http_status"),
            }
        }
        Err("unauthorized")
    }

    /// A valid token, logging in when there is none, it is old, or `renew` is set.
    async fn token(&self, renew: bool) -> Result<String, &'static str> {
        let cached = self.token.lock().map(|t| t.clone()).unwrap_or(None);
        if let Some((token, at)) = cached {
            if !renew && at.elapsed() < TOKEN_LIFETIME {
                return Ok(token);
            }
        }
        let basic = self.basic.as_deref().ok_or("no_credentials")?;
        let response = self.api.get("/login", &[("authorization", basic)]).await?;
        if response.status != StatusCode::OK {
            return Err("unauthorized");
        }
        let value: serde_json::Value =
            serde_json::from_slice(&response.body).map_err(|_| "malformed_json")?;
        let token = value
            .get("token")
            .and_then(serde_json::Value::as_str)
            .ok_or("malformed_json")?
            .to_owned();
        if let Ok(mut slot) = self.token.lock() {
            *slot = Some((token.clone(), Instant::now()));
        }
        Ok(token)
    }
}

/// The reading key of a WattTime region.
pub(super) fn key(region: &str) -> String {
    format!("wt:{region}")
}

/// `{"data":[{"point_time":"2024-01-01T00:00:00+00:00","value":870.2},...],
/// "meta":{"units":"lbs_co2_per_mwh",...}}`.
pub(super) fn parse_forecast(body: &[u8]) -> Result<Option<Sample>, &'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "malformed_json")?;
    // Without units the number could be a percentile or kg: never guess.
    let units = value
        .pointer("/meta/units")
        .and_then(serde_json::Value::as_str);
    if units != Some("lbs_co2_per_mwh") {
        return Err("unexpected_units");
    }
    let point = value.pointer("/data/0").ok_or("malformed_json")?;
    let Some(lbs_per_mwh) = point.get("value").and_then(serde_json::Value::as_f64) else {
        return Ok(None);
    };
    let measured = point
        .get("point_time")
        .and_then(super::json_time)
        .ok_or("malformed_json")?;
    Ok(Some(Sample::measured(
        lbs_per_mwh * GRAMS_PER_POUND / 1000.0,
        measured,
    )))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn converts_pounds_per_megawatt_hour() {
        let body = br#"{"data":[{"point_time":"2024-01-01T00:00:00+00:00","value":1000.0}],"meta":{"units":"lbs_co2_per_mwh","region":"CAISO_NORTH"}}"#;
        let sample = parse_forecast(body).unwrap().unwrap();
        assert!((sample.intensity - 453.592_37).abs() < 1e-9);
        assert_eq!(
            sample.measured,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200)
        );
        let percent = br#"{"data":[{"point_time":"2024-01-01T00:00:00+00:00","value":50}],"meta":{"units":"percentile"}}"#;
        assert_eq!(parse_forecast(percent), Err("unexpected_units"));
        let unlabelled =
            br#"{"data":[{"point_time":"2024-01-01T00:00:00+00:00","value":50}],"meta":{}}"#;
        assert_eq!(parse_forecast(unlabelled), Err("unexpected_units"));
    }
}
