//! The `uk` feed: the National Energy System Operator's Carbon Intensity API,
//! `GET /regional/regionid/{id}`, no authentication. Regional figures are forecasts
//! (generation-based, gCO2/kWh); the current half-hour's forecast is used.

use http::StatusCode;

use super::api::{ApiClient, Backoff};
use super::{Reading, Sample};
use crate::config::ApiFeedConfig;

/// A client of the UK Carbon Intensity API.
#[derive(Debug)]
pub(super) struct UkCarbonIntensity {
    api: ApiClient,
    backoff: Backoff,
}

impl UkCarbonIntensity {
    pub(super) fn new(config: &ApiFeedConfig) -> Self {
        Self {
            api: ApiClient::new(&config.base_url, config.timeout),
            backoff: Backoff::default(),
        }
    }

    /// Current intensity of each region id; keys are `uk:{id}`.
    pub(super) async fn read(&self, region_ids: &[u32]) -> (Reading, Vec<&'static str>) {
        let mut reading = Reading::new();
        let mut errors = Vec::new();
        if self.backoff.paused() {
            return (reading, vec!["rate_limited"]);
        }
        for &id in region_ids {
            match self.region(id).await {
                Ok(Some(value)) => {
                    reading.insert(key(id), value);
                }
                Ok(None) => errors.push("null_value"),
                Err(reason) => errors.push(reason),
            }
        }
        (reading, errors)
    }

    async fn region(&self, id: u32) -> Result<Option<Sample>, &'static str> {
        let response = self
            .api
            .get(&format!("/regional/regionid/{id}"), &[])
            .await?;
        match response.status {
            StatusCode::OK => parse_regional(&response.body),
            StatusCode::TOO_MANY_REQUESTS => {
                self.backoff.pause(&response.headers);
                Err("rate_limited")
            }
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => Err("unknown_zone"),
            _ => Err("http_status"),
        }
    }
}

/// The reading key of a UK region id.
pub(super) fn key(id: u32) -> String {
    format!("uk:{id}")
}

/// `{"data":[{"regionid":13,...,"data":[{"from":"2018-01-20T12:00Z","to":...,
/// "intensity":{"forecast":266,"index":"moderate"}}]}]}`.
pub(super) fn parse_regional(body: &[u8]) -> Result<Option<Sample>, &'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "malformed_json")?;
    let period = value.pointer("/data/0/data/0").ok_or("malformed_json")?;
    let Some(intensity) = period
        .pointer("/intensity/forecast")
        .and_then(serde_json::Value::as_f64)
    else {
        return Ok(None);
    };
    let measured = period
        .get("from")
        .and_then(super::json_time)
        .ok_or("malformed_json")?;
    Ok(Some(Sample::measured(intensity, measured)))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn parses_the_documented_regional_answer() {
        let body = br#"{"data":[{"regionid":13,"dnoregion":"UKPN London","shortname":"London","data":[{"from":"2018-01-20T12:00Z","to":"2018-01-20T12:30Z","intensity":{"forecast":266,"index":"moderate"},"generationmix":[{"fuel":"gas","perc":43.6}]}]}]}"#;
        let sample = parse_regional(body).unwrap().unwrap();
        assert_eq!(sample.intensity, 266.0);
        assert_eq!(
            sample.measured,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_516_449_600)
        );
        assert_eq!(parse_regional(br#"{"data":[]}"#), Err("malformed_json"));
    }
}
