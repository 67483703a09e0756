//! The `electricitymaps` feed: Electricity Maps API v3,
//! `GET /v3/carbon-intensity/latest?zone=Z&emissionFactorType=lifecycle|direct` with the
//! `auth-token` header; when the latest value is missing (null, or the call failed for a reason
//! other than rate limiting or authentication), `GET /v3/carbon-intensity/forecast` supplies the
//! forecast for the current hour. The token comes from an environment variable, never from the
//! configuration file. A 429 answer pauses the feed for `Retry-After` seconds.
//!
//! An answer for another zone than the one asked (the API falls back to the caller's location
//! in some cases) or with other emission factors than asked is rejected, never used for the
//! region; `isEstimated` is kept with the value and shown by the admin API.

use std::time::SystemTime;

use http::StatusCode;

use super::api::{ApiClient, Backoff};
use super::{Reading, Sample};
use crate::config::ElectricityMapsConfig;

/// A client of the Electricity Maps API.
#[derive(Debug)]
pub(super) struct ElectricityMaps {
    api: ApiClient,
    token: Option<String>,
    basis: &'static str,
    backoff: Backoff,
}

impl ElectricityMaps {
    pub(super) fn new(config: &ElectricityMapsConfig) -> Self {
        Self {
            api: ApiClient::new(&config.base_url, config.timeout),
            token: std::env::var(&config.token_env)
                .ok()
                .filter(|t| !t.is_empty()),
            basis: config.basis.name(),
            backoff: Backoff::default(),
        }
    }

    /// Latest intensity of each zone; the reading holds the zones that answered, the errors
    /// name why others did not.
    pub(super) async fn read(&self, zones: &[&str]) -> (Reading, Vec<&'static str>) {
        let mut reading = Reading::new();
        let mut errors = Vec::new();
        if self.backoff.paused() {
            return (reading, vec!["rate_limited"]);
        }
        for zone in zones {
            let value = match self.latest(zone).await {
                Ok(Some(value)) => Ok(Some(value)),
                Err(
                    reason @ ("rate_limited" | "unauthorized" | "unknown_zone" | "wrong_zone"
                    | "wrong_basis"),
                ) => Err(reason),
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

    async fn latest(&self, zone: &str) -> Result<Option<Sample>, &'static str> {
        let body = self.call("latest", zone).await?;
        let asked = Asked {
            zone,
            basis: self.basis,
        };
        parse_latest(&body, &asked)
    }

    async fn forecast(&self, zone: &str) -> Result<Option<Sample>, &'static str> {
        let body = self.call("forecast", zone).await?;
        let asked = Asked {
            zone,
            basis: self.basis,
        };
        parse_forecast(&body, &asked, SystemTime::now())
    }

    /// One authenticated `GET /v3/carbon-intensity/{what}` for `zone`; the body of a 200,
    /// otherwise a reason.
    async fn call(&self, what: &str, zone: &str) -> Result<bytes::Bytes, &'static str> {
        let path = format!(
            "/v3/carbon-intensity/{what}?zone={zone}&emissionFactorType={}",
            self.basis
        );
        let headers: Vec<(&str, &str)> = self
            .token
            .iter()
            .map(|t| ("auth-token", t.as_str()))
            .collect();
        let response = self.api.get(&path, &headers).await?;
        match response.status {
            StatusCode::OK => Ok(response.body),
            StatusCode::TOO_MANY_REQUESTS => {
                self.backoff.pause(&response.headers);
                Err("rate_limited")
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err("unauthorized"),
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => Err("unknown_zone"),
            _ => Err("http_status"),
        }
    }
}

/// What a call asked for, which the answer must match.
#[derive(Debug, Clone, Copy)]
pub(super) struct Asked<'a> {
    /// The zone key.
    pub(super) zone: &'a str,
    /// `lifecycle` or `direct`.
    pub(super) basis: &'a str,
}

/// Parses a `carbon-intensity/latest` answer: `carbonIntensity` (may be null), `datetime`,
/// `isEstimated`; `zone` and `emissionFactorType`, when present, must be what was asked.
pub(super) fn parse_latest(body: &[u8], asked: &Asked<'_>) -> Result<Option<Sample>, &'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "malformed_json")?;
    check_answer(&value, asked)?;
    point(&value)
}

/// Rejects an answer about another zone or with other emission factors than asked.
fn check_answer(value: &serde_json::Value, asked: &Asked<'_>) -> Result<(), &'static str> {
    let field = |name| value.get(name).and_then(serde_json::Value::as_str);
    if field("zone").is_some_and(|zone| zone != asked.zone) {
        return Err("wrong_zone");
    }
    if field("emissionFactorType").is_some_and(|basis| basis != asked.basis) {
        return Err("wrong_basis");
    }
    Ok(())
}

/// One `{carbonIntensity, datetime, isEstimated}` point.
fn point(value: &serde_json::Value) -> Result<Option<Sample>, &'static str> {
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
    let estimated = value
        .get("isEstimated")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    Ok(Some(Sample {
        intensity,
        measured,
        estimated,
    }))
}

/// Parses a `carbon-intensity/forecast` answer (`{"zone", "forecast": [{carbonIntensity,
/// datetime}]}`) and takes the last point at or before `now` (the first if all are later).
/// A forecast is an estimate.
pub(super) fn parse_forecast(
    body: &[u8],
    asked: &Asked<'_>,
    now: SystemTime,
) -> Result<Option<Sample>, &'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "malformed_json")?;
    check_answer(&value, asked)?;
    let points = value
        .get("forecast")
        .and_then(serde_json::Value::as_array)
        .ok_or("malformed_json")?;
    let mut chosen: Option<Sample> = None;
    for p in points {
        match point(p)? {
            Some(found) if chosen.is_none() || found.measured <= now => chosen = Some(found),
            _ => {}
        }
    }
    Ok(chosen.map(|sample| Sample {
        estimated: true,
        ..sample
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DE: Asked<'static> = Asked {
        zone: "DE",
        basis: "lifecycle",
    };

    #[test]
    fn parses_the_documented_answer() {
        let body = br#"{"zone":"DE","carbonIntensity":302,"datetime":"2019-05-21T00:00:00.000Z","updatedAt":"2019-05-21T00:39:10.226Z","emissionFactorType":"lifecycle","isEstimated":false}"#;
        let sample = parse_latest(body, &DE).unwrap().unwrap();
        assert_eq!((sample.intensity, sample.estimated), (302.0, false));
        assert_eq!(
            sample.measured,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_558_396_800)
        );
        let estimated = br#"{"zone":"DE","carbonIntensity":302,"datetime":"2019-05-21T00:00:00.000Z","isEstimated":true,"estimationMethod":"TIME_SLICER_AVERAGE"}"#;
        assert!(parse_latest(estimated, &DE).unwrap().unwrap().estimated);
    }

    #[test]
    fn an_answer_for_another_zone_or_basis_is_rejected() {
        let other = br#"{"zone":"FR","carbonIntensity":30,"datetime":"2019-05-21T00:00:00.000Z","emissionFactorType":"lifecycle"}"#;
        assert_eq!(parse_latest(other, &DE), Err("wrong_zone"));
        let direct = br#"{"zone":"DE","carbonIntensity":250,"datetime":"2019-05-21T00:00:00.000Z","emissionFactorType":"direct"}"#;
        assert_eq!(parse_latest(direct, &DE), Err("wrong_basis"));
        let forecast = br#"{"zone":"FR","forecast":[{"carbonIntensity":30,"datetime":"2024-01-01T00:00:00.000Z"}]}"#;
        assert_eq!(
            parse_forecast(forecast, &DE, SystemTime::now()),
            Err("wrong_zone")
        );
    }

    #[test]
    fn forecast_takes_the_current_hour() {
        let body = br#"{"zone":"DE","forecast":[{"carbonIntensity":300,"datetime":"2024-01-01T00:00:00.000Z"},{"carbonIntensity":280,"datetime":"2024-01-01T01:00:00.000Z"},{"carbonIntensity":200,"datetime":"2024-01-01T02:00:00.000Z"}],"updatedAt":"2024-01-01T00:10:00.000Z"}"#;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_070_800 + 600);
        let sample = parse_forecast(body, &DE, now).unwrap().unwrap();
        assert_eq!((sample.intensity, sample.estimated), (280.0, true));
        let early = SystemTime::UNIX_EPOCH;
        let first = parse_forecast(body, &DE, early).unwrap().unwrap();
        assert_eq!(first.intensity, 300.0);
    }

    #[test]
    fn null_intensity_is_no_value() {
        let body = br#"{"zone":"DE","carbonIntensity":null,"datetime":"2019-05-21T00:00:00.000Z"}"#;
        assert_eq!(parse_latest(body, &DE), Ok(None));
        assert_eq!(parse_latest(b"<html>", &DE), Err("malformed_json"));
    }
}
