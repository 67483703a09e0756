//! `aegis-proxy simulate`: replay an hourly carbon trace through the routing policy and print
//! a comparison table (markdown).

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

/// Runs `policies` and renders the markdown table.
pub fn report(
    trace: &Trace,
    deployment: &Deployment,
    names: &[String],
    policies: &[SimPolicy],
    config: &SimConfig,
) -> String {
    let results: Vec<SimResult> = policies
        .iter()
        .map(|&p| simulate(trace, deployment, p, config))
        .collect();
    let baseline = |policy| {
        results
            .iter()
            .find(|r| r.policy == policy)
            .map(|r| r.grams_per_request)
            .unwrap_or_else(|| simulate(trace, deployment, policy, config).grams_per_request)
    };
    let (rr, nearest) = (
        baseline(SimPolicy::RoundRobin),
        baseline(SimPolicy::Nearest),
    );
    let regions: Vec<String> = names
        .iter()
        .zip(&deployment.rtt_ms)
        .map(|(n, r)| format!("{n} ({r} ms)"))
        .collect();
    let mut out = format!(
        "{} hours, regions: {}; latency budget {} ms, max share {}, {} requests/hour, {} Wh/request\n\n",
        trace.values.len(),
        regions.join(", "),
        config.policy.latency_budget_ms,
        config.policy.max_share,
        config.requests_per_hour,
        config.energy.wh_per_request,
    );
    out.push_str("| policy | g CO2eq/request | vs round robin | vs nearest | over latency budget | peak region share |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for r in &results {
        out.push_str(&format!(
            "| {} | {:.4} | {} | {} | {:.1} % | {:.0} % |\n",
            r.policy.name(),
            r.grams_per_request,
            change(r.grams_per_request, rr),
            change(r.grams_per_request, nearest),
            r.over_budget * 100.0,
            r.peak_share * 100.0,
        ));
    }
    out
}

fn change(value: f64, baseline: f64) -> String {
    if baseline <= 0.0 {
        return "n/a".into();
    }
    format!("{:+.1} %", (value / baseline - 1.0) * 100.0)
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
        let table = report(&trace, &d, &names, &SimPolicy::ALL, &SimConfig::default());
        assert!(
            table.contains("| greenest | 0.0020 | -81.8 % | -90.0 % | 0.0 % | 100 % |"),
            "{table}"
        );
        assert_eq!(table.lines().filter(|l| l.starts_with("| ")).count(), 6);
    }
}
