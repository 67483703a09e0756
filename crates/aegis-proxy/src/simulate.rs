//! `aegis-proxy simulate`: replay an hourly carbon trace through the routing policies and print
//! a comparison (markdown, CSV or JSON), optionally with an SVG chart ([`chart`]).

pub mod chart;

use aegis_carbon::simulate::{simulate, Deployment, SimConfig, SimPolicy, SimResult};
use aegis_carbon::trace::Trace;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimulateError {
    /// The `--regions` list is malformed or names a zone the trace lacks.
    #[error("--regions: {0}")]
    Regions(String),
    /// The trace file could not be parsed.
    #[error("trace: {0}")]
    Trace(#[from] aegis_carbon::trace::TraceError),
}

/// Parses `ZONE=RTT_MS,ZONE=RTT_MS,...` against the trace's zones.
pub fn deployment(
    regions: &str,
    trace: &Trace,
) -> Result<(Deployment, Vec<String>), SimulateError> {
    let mut columns = Vec::new();
    let mut rtt_ms = Vec::new();
    let mut names = Vec::new();
    for item in regions.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (zone, rtt) = item
            .split_once('=')
            .ok_or_else(|| SimulateError::Regions(format!("{item:?} is not ZONE=RTT_MS")))?;
        let column = trace.zone(zone).ok_or_else(|| {
            SimulateError::Regions(format!(
                "zone {zone:?} is not in the trace (it has {})",
                trace.zones.join(", ")
            ))
        })?;
        let rtt: f64 = rtt
            .parse()
            .ok()
            .filter(|r: &f64| r.is_finite() && *r >= 0.0)
            .ok_or_else(|| {
                SimulateError::Regions(format!("{rtt:?} is not a round-trip time in ms"))
            })?;
        columns.push(column);
        rtt_ms.push(rtt);
        names.push(zone.to_owned());
    }
    if columns.is_empty() {
        return Err(SimulateError::Regions(
            "list at least one ZONE=RTT_MS".into(),
        ));
    }
    Ok((Deployment { columns, rtt_ms }, names))
}

/// How `simulate` prints its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[non_exhaustive]
pub enum Format {
    /// A markdown table with a header line (default).
    #[default]
    Markdown,
    /// One CSV row per policy.
    Csv,
    /// One JSON document: the settings and a row per policy.
    Json,
}

/// What every policy did, and the baselines they are compared with.
#[derive(Debug, Clone)]
pub struct Report {
    /// One result per requested policy, in the order asked.
    pub results: Vec<SimResult>,
    /// Grams per request of round robin, nearest and the oracle (always simulated).
    pub round_robin: f64,
    /// See [`Report::round_robin`].
    pub nearest: f64,
    /// See [`Report::round_robin`].
    pub oracle: f64,
    /// Hours, regions and settings, for the header.
    context: String,
}

fn change(value: f64, baseline: f64) -> String {
    ratio(value, baseline).map_or_else(|| "n/a".into(), |r| format!("{:+.1} %", r * 100.0))
}

/// Runs `policies` (plus the baselines each row is compared with).
pub fn run(
    trace: &Trace,
    deployment: &Deployment,
    names: &[String],
    policies: &[SimPolicy],
    config: &SimConfig,
) -> Report {
    let results: Vec<SimResult> = policies
        .iter()
        .map(|&p| simulate(trace, deployment, p, config))
        .collect();
    let grams = |policy| {
        results
            .iter()
            .find(|r| r.policy == policy)
            .map(|r| r.grams_per_request)
            .unwrap_or_else(|| simulate(trace, deployment, policy, config).grams_per_request)
    };
    let regions: Vec<String> = names
        .iter()
        .zip(&deployment.rtt_ms)
        .map(|(n, r)| format!("{n} ({r} ms)"))
        .collect();
    let context = format!(
        "{} hours, regions: {}; latency budget {} ms, max share {}, feed lag {} h, {} requests/hour, {} Wh/request",
        trace.values.len(),
        regions.join(", "),
        config.policy.latency_budget_ms,
        config.policy.max_share,
        config.lag_hours,
        config.requests_per_hour,
        config.energy.wh_per_request,
    );
    Report {
        round_robin: grams(SimPolicy::RoundRobin),
        nearest: grams(SimPolicy::Nearest),
        oracle: grams(SimPolicy::Oracle),
        results,
        context,
    }
}

impl Report {
    /// Renders the report in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Markdown => self.markdown(),
            Format::Csv => self.csv(),
            Format::Json => self.json(),
        }
    }

    /// The fraction of the oracle's saving over nearest that `grams` achieves (1 = as good as
    /// the oracle; `None` when the oracle saves nothing).
    pub fn of_oracle_saving(&self, grams: f64) -> Option<f64> {
        let possible = self.nearest - self.oracle;
        (possible > 0.0).then(|| (self.nearest - grams) / possible)
    }

    fn markdown(&self) -> String {
        let mut out = format!("{}\n\n", self.context);
        out.push_str("| policy | g CO2eq/request | vs round robin | vs nearest | of oracle's saving | over latency budget | peak region share |\n");
        out.push_str("|---|---|---|---|---|---|---|\n");
        for r in &self.results {
            out.push_str(&format!(
                "| {} | {:.4} | {} | {} | {} | {:.1} % | {:.0} % |\n",
                r.policy.name(),
                r.grams_per_request,
                change(r.grams_per_request, self.round_robin),
                change(r.grams_per_request, self.nearest),
                self.of_oracle_saving(r.grams_per_request)
                    .map_or_else(|| "n/a".into(), |f| format!("{:.0} %", f * 100.0)),
                r.over_budget * 100.0,
                r.peak_share * 100.0,
            ));
        }
        out
    }

    fn csv(&self) -> String {
        let mut out = String::from("policy,grams_per_request,vs_round_robin,vs_nearest,of_oracle_saving,over_budget,peak_share\n");
        for r in &self.results {
            out.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                r.policy.key(),
                r.grams_per_request,
                ratio(r.grams_per_request, self.round_robin)
                    .map_or(String::new(), |v| v.to_string()),
                ratio(r.grams_per_request, self.nearest).map_or(String::new(), |v| v.to_string()),
                self.of_oracle_saving(r.grams_per_request)
                    .map_or(String::new(), |v| v.to_string()),
                r.over_budget,
                r.peak_share,
            ));
        }
        out
    }

    fn json(&self) -> String {
        let rows: Vec<serde_json::Value> = self
            .results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "policy": r.policy.key(),
                    "grams_per_request": r.grams_per_request,
                    "vs_round_robin": ratio(r.grams_per_request, self.round_robin),
                    "vs_nearest": ratio(r.grams_per_request, self.nearest),
                    "of_oracle_saving": self.of_oracle_saving(r.grams_per_request),
                    "over_budget": r.over_budget,
                    "peak_share": r.peak_share,
                })
            })
            .collect();
        let document = serde_json::json!({ "settings": self.context, "policies": rows });
        format!("{document:#}\n")
    }
}

/// `value / baseline - 1`, or `None` without a baseline.
fn ratio(value: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0).then(|| value / baseline - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "datetime_utc,DE,NO\n2023-01-01T00:00:00Z,400,40\n";

    #[test]
    fn regions_must_exist_in_the_trace() {
        let trace = Trace::parse(TRACE).unwrap();
        let error = deployment("DE=0,FR=10", &trace).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--regions: zone \"FR\" is not in the trace (it has DE, NO)"
        );
        let error = deployment("DE:0", &trace).unwrap_err();
        assert_eq!(error.to_string(), "--regions: \"DE:0\" is not ZONE=RTT_MS");
    }

    #[test]
    fn report_has_a_row_per_policy() {
        let trace = Trace::parse(TRACE).unwrap();
        let (d, names) = deployment("DE=0,NO=30", &trace).unwrap();
        let report = run(&trace, &d, &names, &SimPolicy::ALL, &SimConfig::default());
        let table = report.render(Format::Markdown);
        assert!(
            table.contains("| greenest | 0.0020 | -81.8 % | -90.0 % | 100 % | 0.0 % | 100 % |"),
            "{table}"
        );
        assert_eq!(table.lines().filter(|l| l.starts_with("| ")).count(), 7);
        let csv = report.render(Format::Csv);
        assert_eq!(csv.lines().count(), 7, "{csv}");
        assert!(csv.contains("\ngreenest,0.002"), "{csv}");
        let json: serde_json::Value = serde_json::from_str(&report.render(Format::Json)).unwrap();
        assert_eq!(json["policies"][3]["policy"], "greenest");
        assert_eq!(json["policies"][3]["of_oracle_saving"], 1.0);
    }
}
