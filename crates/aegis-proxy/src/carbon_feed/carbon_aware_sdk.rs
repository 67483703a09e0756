//! The `carbon_aware_sdk` feed: a Green Software Foundation Carbon Aware SDK WebAPI,
//! `GET /emissions/bylocations?locations=L1&locations=L2&time=T&toTime=NOW`, which answers an
//! array of `{"location", "time", "rating", "duration"}` with `rating` in gCO2eq/kWh. One call
//! covers every region, and the SDK's own cache sits between a fleet of proxies and the
//! provider it is configured for, so the provider sees one client. The newest point at or
//! before now is used per location. The SDK reports whatever its data source does (WattTime
//! marginal, Electricity Maps average), so the configuration declares the signal and basis.

use std::time::{Duration, SystemTime};

use http::StatusCode;

use super::api::{ApiClient, Backoff};
use super::{Reading, Sample};
use crate::config::SdkFeedConfig;

/// How far back the query reaches: a provider that updates every five minutes (WattTime) or
/// hourly (Electricity Maps) has a point inside it.
const LOOKBACK: Duration = Duration::from_secs(2 * 3600);

/// A client of one Carbon Aware SDK WebAPI.
#[derive(Debug)]
pub(super) struct CarbonAwareSdk {
    api: ApiClient,
    backoff: Backoff,
}

impl CarbonAwareSdk {
    pub(super) fn new(config: &SdkFeedConfig) -> Self {
        Self {
            api: ApiClient::new(&config.api.base_url, config.api.timeout),
            backoff: Backoff::default(),
        }
    }

    /// The newest rating of each location; keys are `sdk:{location}`.
    pub(super) async fn read(&self, locations: &[&str]) -> (Reading, Vec<&'static str>) {
        if locations.is_empty() {
            return (Reading::new(), Vec::new());
        }
        if self.backoff.paused() {
            return (Reading::new(), vec!["rate_limited"]);
        }
        let now = SystemTime::now();
        match self.call(locations, now).await {
            Ok(body) => match parse_bylocations(&body, now) {
                Ok(reading) => {
                    let missing = locations
                        .iter()
                        .filter(|l| !reading.contains_key(&key(l)))
                        .map(|_| "null_value")
                        .collect();
                    (reading, missing)
                }
                Err(reason) => (Reading::new(), vec![reason]),
            },
            Err(reason) => (Reading::new(), vec![reason]),
        }
    }

    async fn call(
        &self,
        locations: &[&str],
        now: SystemTime,
    ) -> Result<bytes::Bytes, &'static str> {
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        };
        let mut path = String::from("/emissions/bylocations?");
        for location in locations {
            path.push_str("locations=");
            path.push_str(&percent_encode(location));
            path.push('&');
        }
        path.push_str(&format!(
            "time={}&toTime={}",
            super::rfc3339(unix(now - LOOKBACK)),
            super::rfc3339(unix(now))
        ));
        let response = self
            .api
            .get(&path, &[("accept", "application/json")])
            .await?;
        match response.status {
            StatusCode::OK => Ok(response.body),
            // The SDK answers 204 when its source has no data for the window.
            StatusCode::NO_CONTENT => Err("null_value"),
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

/// The reading key of an SDK location.
pub(super) fn key(location: &str) -> String {
    format!("sdk:{location}")
}

/// Location names are cloud region names (`eastus`, `europe-west3`); anything else is
/// percent-encoded so that it cannot change the query.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `[{"location":"eastus","time":"2022-05-17T20:45:11.5092741+00:00","rating":70,
/// "duration":"00:05:00"}, ...]`: per location, the newest point at or before `now`.
pub(super) fn parse_bylocations(body: &[u8], now: SystemTime) -> Result<Reading, &'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "malformed_json")?;
    let points = value.as_array().ok_or("malformed_json")?;
    let mut reading = Reading::new();
    for point in points {
        let location = point
            .get("location")
            .and_then(serde_json::Value::as_str)
            .ok_or("malformed_json")?;
        let Some(rating) = point.get("rating").and_then(serde_json::Value::as_f64) else {
            continue;
        };
        let measured = point
            .get("time")
            .and_then(super::json_time)
            .ok_or("malformed_json")?;
        if measured > now {
            continue;
        }
        let sample = Sample::measured(rating, measured);
        reading
            .entry(key(location))
            .and_modify(|kept| {
                if sample.measured > kept.measured {
                    *kept = sample;
                }
            })
            .or_insert(sample);
    }
    Ok(reading)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_newest_point_of_each_location() {
        let body = br#"[
            {"location":"eastus","time":"2022-05-17T20:40:00+00:00","rating":75,"duration":"00:05:00"},
            {"location":"eastus","time":"2022-05-17T20:45:11.5092741+00:00","rating":70,"duration":"00:05:00"},
            {"location":"westus","time":"2022-05-17T20:45:11.5092741+00:00","rating":64,"duration":"00:05:00"},
            {"location":"westus","time":"2099-01-01T00:00:00+00:00","rating":1,"duration":"00:05:00"}
        ]"#;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_652_820_400);
        let reading = parse_bylocations(body, now).unwrap();
        assert_eq!(reading[&key("eastus")].intensity, 70.0);
        assert_eq!(reading[&key("westus")].intensity, 64.0);
        assert_eq!(parse_bylocations(b"{}", now), Err("malformed_json"));
        assert_eq!(parse_bylocations(b"[]", now), Ok(Reading::new()));
    }

    #[test]
    fn locations_cannot_change_the_query() {
        assert_eq!(percent_encode("europe-west3"), "europe-west3");
        assert_eq!(percent_encode("a&toTime=x"), "a%26toTime%3Dx");
    }
}
