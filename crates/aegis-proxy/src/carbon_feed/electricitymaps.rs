//! The `electricitymaps` feed: Electricity Maps API v3, `GET /v3/carbon-intensity/latest?zone=Z`
//! with the `auth-token` header. The token comes from an environment variable, never from the
//! configuration file. A 429 answer pauses the feed for `Retry-After` seconds.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use aegis_carbon::trace::parse_rfc3339;
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
            match self.latest(zone).await {
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
        let path = format!("/v3/carbon-intensity/latest?zone={zone}");
        let headers: Vec<(&str, &str)> = self
            .token
            .iter()
            .map(|t| ("auth-token", t.as_str()))
            .collect();
        let response = self.api.get(&path, &headers).await?;
        match response.status {
            StatusCode::OK => parse_latest(&response.body),
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
fn parse_latest(body: &[u8]) -> Result<Option<(f64, SystemTime)>, &'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "malformed_json")?;
    let Some(intensity) = value
        .get("carbonIntensity")
        .and_then(serde_json::Value::as_f64)
    else {
        return Ok(None);
    };
    let measured = value
        .get("datetime")
        .and_then(serde_json::Value::as_str)
        .and_then(parse_rfc3339)
        .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
        .ok_or("malformed_json")?;
    Ok(Some((intensity, measured)))
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
    fn null_intensity_is_no_value() {
        let body = br#"{"zone":"DE","carbonIntensity":null,"datetime":"2019-05-21T00:00:00.000Z"}"#;
        assert_eq!(parse_latest(body), Ok(None));
        assert_eq!(parse_latest(b"<html>"), Err("malformed_json"));
    }
}
