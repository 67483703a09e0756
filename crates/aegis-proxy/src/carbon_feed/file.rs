//! The `file` feed: a local JSON object or a wide CSV trace, re-read at every poll.

use std::path::Path;
use std::time::{Duration, SystemTime};

use aegis_carbon::trace::Trace;

use super::{Reading, Sample};

/// Reads a wide CSV trace (the row in force now, measured at its timestamp) or a JSON object
/// `{"ZONE": gCO2eq/kWh, ...}` (measured at the file's modification time).
pub(super) async fn read(path: &Path) -> Result<Reading, &'static str> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|_| "unreadable")?;
    let modified = tokio::fs::metadata(path)
        .await
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now());
    if text.trim_start().starts_with('{') {
        parse_json(&text, modified)
    } else {
        parse_csv(&text, SystemTime::now())
    }
}

pub(super) fn parse_json(text: &str, measured: SystemTime) -> Result<Reading, &'static str> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| "malformed_json")?;
    let object = value.as_object().ok_or("malformed_json")?;
    Ok(object
        .iter()
        .filter_map(|(zone, v)| Some((zone.clone(), Sample::measured(v.as_f64()?, measured))))
        .collect())
}

pub(super) fn parse_csv(text: &str, now: SystemTime) -> Result<Reading, &'static str> {
    let trace = Trace::parse(text).map_err(|_| "malformed_csv")?;
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let row = trace.row_at(now_secs).ok_or("no_current_row")?;
    let measured = SystemTime::UNIX_EPOCH + Duration::from_secs(trace.times[row].max(0) as u64);
    Ok(trace
        .zones
        .iter()
        .zip(&trace.values[row])
        .map(|(zone, &v)| (zone.clone(), Sample::measured(v, measured)))
        .collect())
}
