//! The `electricitymaps` feed: Electricity Maps API v3, `GET /v3/carbon-intensity/latest?zone=Z`
//! with the `auth-token` header; when the latest value is missing (null, or the call failed for
//! a reason other than rate limiting or authentication), `GET /v3/carbon-intensity/forecast`
//! supplies the forecast for the current hour. The token comes from an environment variable,
//! never from the configuration file. A 429 answer pauses the feed for `Retry-After` seconds.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;

use super::api::ApiClient;
use super::Reading;
use crate::config::ElectricityMapsConfig;

/// Pause after a 429 without `Retry-After`.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(60);

/// A client of the Electricity Maps API.
#[derive(Debug)]
pub(super) struct ElectricityMaps {
    api: ApiClient,
    token: Option<String>,
    paused_until: Mutex<Option<Instant>>,
}

impl ElectricityMaps {
    pub(super) fn new(config: &ElectricityMapsConfig) -> Self {
        Self {
            api: ApiClient::new(&config.base_url, config.timeout),
            token: std::env::var(&config.token_env)
                .ok()
                .filter(|t| !t.is_empty()),
            paused_until: Mutex::new(None),
        }
    }

    /// Latest intensity of each zone; the reading holds the zones that answered, the errors
    /// name why others did not.
    pub(super) async fn read(&self, zones: &[&str]) -> (Reading, Vec<&'static str>) {
        let mut reading = Reading::new();
        let mut errors = Vec::new();
        if self.paused() {
            return (reading, vec!["rate_limited"]);
        }
        for zone in zones {
            let value = match self.latest(zone).await {
                Ok(Some(value)) => Ok(Some(value)),
                Err(reason @ ("rate_limited" | "unauthorized" | "unknown_zone")) => Err(reason),
                Ok(None) => {
                    errors.push("null_value");
                    self.forecast(zone).await
                }
                Err(reason) => {
                    errors.push(reason);
                    self.forecast(zone).await
                }
            };
            match value {
                Ok(Some(value)) => {
                    reading.insert((*zone).to_owned(), value);
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

    fn paused(&self) -> bool {
        let paused = self.paused_until.lock().map(|p| *p).unwrap_or(None);
        paused.is_some_and(|until| Instant::now() < until)
    }

    fn pause(&self, duration: Duration) {
        if let Ok(mut paused) = self.paused_until.lock() {
            *paused = Some(Instant::now() + duration);
        }
    }

    async fn latest(&self, zone: &str) -> Result<Option<(f64, SystemTime)>, &'static str> {
        let body = self
            .call(&format!("/v3/carbon-intensity/latest?zone={zone}"))
            .await?;
        parse_latest(&body)
    }

    async fn forecast(&self, zone: &str) -> Result<Option<(f64, SystemTime)>, &'static str> {
        let body = self
            .call(&format!("/v3/carbon-intensity/forecast?zone={zone}"))
            .await?;
        parse_forecast(&body, SystemTime::now())
    }

    /// One authenticated GET; the body of a 200, otherwise a reason.
    async fn call(&self, path: &str) -> Result<bytes::Bytes, &'static str> {
        let headers: Vec<(&str, &str)> = self
            .token
            .iter()
            .map(|t| ("auth-token", t.as_str()))
            .collect();
        let response = self.api.get(path, &headers).await?;
        match response.status {
            StatusCode::OK => Ok(response.body),
            StatusCode::TOO_MANY_REQUESTS => {
                let wait = response
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map_or(DEFAULT_BACKOFF, Duration::from_secs);
                self.pause(wait);
                Err("rate_limited")
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err("unauthorized"),
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => Err("unknown_zone"),
            _ => Err("http_status"),
        }
    }
}

/// Parses a `carbon-intensity/latest` answer: `carbonIntensity` (may be null) and `datetime`.
pub(super) fn parse_latest(body: &[u8]) -> Result<Option<(f64, SystemTime)>, &'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "malformed_json")?;
    point(&value)
}

/// One `{carbonIntensity, datetime}` point.
fn point(value: &serde_json::Value) -> Result<Option<(f64, SystemTime)>, &'static str> {
    let Some(intensity) = value
        .get("carbonIntensity")
        .and_then(serde_json::Value::as_f64)
    else {
        return Ok(None);
    };
    let measured = value
        .get("datetime")
        .and_then(super::json_time)
        .ok_or("malformed_json")?;
    Ok(Some((intensity, measured)))
}

/// Parses a `carbon-intensity/forecast` answer (`{"forecast": [{carbonIntensity, datetime}]}`)
/// and takes the last point at or before `now` (the first if all are later).
pub(super) fn parse_forecast(
    body: &[u8],
    now: SystemTime,
) -> Result<Option<(f64, SystemTime)>, &'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "malformed_json")?;
    let points = value
        .get("forecast")
        .and_then(serde_json::Value::as_array)
        .ok_or("malformed_json")?;
    let mut chosen = None;
    for p in points {
        match point(p)? {
            Some(found) if chosen.is_none() || found.1 <= now => chosen = Some(found),
            _ => {}
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_answer() {
        let body = br#"{"zone":"DE","carbonIntensity":302,"datetime":"2019-05-21T00:00:00.000Z","updatedAt":"2019-05-21T00:39:10.226Z","emissionFactorType":"lifecycle","isEstimated":false}"#;
        let (value, at) = parse_latest(body).unwrap().unwrap();
        assert_eq!(value, 302.0);
        assert_eq!(
            at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_558_396_800)
        );
    }

    #[test]
    fn forecast_takes_the_current_hour() {
        let body = br#"{"zone":"DE","forecast":[{"carbonIntensity":300,"datetime":"2024-01-01T00:00:00.000Z"},{"carbonIntensity":280,"datetime":"2024-01-01T01:00:00.000Z"},{"carbonIntensity":200,"datetime":"2024-01-01T02:00:00.000Z"}],"updatedAt":"2024-01-01T00:10:00.000Z"}"#;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_070_800 + 600);
        assert_eq!(parse_forecast(body, now).unwrap().unwrap().0, 280.0);
        let early = SystemTime::UNIX_EPOCH;
        assert_eq!(parse_forecast(body, early).unwrap().unwrap().0, 300.0);
    }

    #[test]
    fn null_intensity_is_no_value() {
        let body = br#"{"zone":"DE","carbonIntensity":null,"datetime":"2019-05-21T00:00:00.000Z"}"#;
        assert_eq!(parse_latest(body), Ok(None));
        assert_eq!(parse_latest(b"<html>"), Err("malformed_json"));
    }
}
