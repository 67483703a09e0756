//! `simulate --svg`: each region's intensity over the trace, and below it the region a policy
//! chose each hour, drawn with plotters' SVG backend (text as `<text>`, no font libraries).

use aegis_carbon::simulate::{Deployment, SimResult};
use aegis_carbon::trace::Trace;
use plotters::prelude::*;

/// Width and height of the chart in pixels.
const SIZE: (u32, u32) = (1400, 700);

/// Renders the chart as an SVG document; `chosen` is the policy whose choices are drawn.
pub fn svg(
    trace: &Trace,
    deployment: &Deployment,
    names: &[String],
    chosen: &SimResult,
) -> Result<String, String> {
    let mut out = String::new();
    draw(&mut out, trace, deployment, names, chosen).map_err(|e| e.to_string())?;
    Ok(out)
}

fn draw(
    out: &mut String,
    trace: &Trace,
    deployment: &Deployment,
    names: &[String],
    chosen: &SimResult,
) -> Result<(), Box<dyn std::error::Error>> {
    let hours = trace.values.len();
    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(SIZE.1 * 3 / 4);
    let highest = trace
        .values
        .iter()
        .flat_map(|row| deployment.columns.iter().map(move |&c| row[c]))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let mut chart = ChartBuilder::on(&upper)
        .caption("Grid carbon intensity per region", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0..hours, 0.0..highest * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("hour of the trace")
        .y_desc("gCO2eq/kWh")
        .draw()?;
    for (i, (&column, name)) in deployment.columns.iter().zip(names).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = (0..hours).map(|h| (h, trace.values[h][column]));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(1)))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let regions = names.len();
    let mut strip = ChartBuilder::on(&lower)
        .caption(
            format!("Region chosen by {}", chosen.policy.name()),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0..hours, 0..regions)?;
    strip
        .configure_mesh()
        .disable_mesh()
        .y_labels(regions + 1)
        .y_label_formatter(&|i| names.get(*i).cloned().unwrap_or_default())
        .draw()?;
    strip.draw_series(runs(&chosen.hourly_region).map(|(start, end, region)| {
        Rectangle::new(
            [(start, region), (end, region + 1)],
            Palette99::pick(region).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}

/// Consecutive hours with the same region, as `(first hour, hour after the last, region)`.
fn runs(hourly: &[usize]) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let mut start = 0;
    (1..=hourly.len()).filter_map(move |h| {
        if h < hourly.len() && hourly[h] == hourly[start] {
            return None;
        }
        let run = (start, h, hourly[start]);
        start = h;
        Some(run)
    })
}

#[cfg(test)]
mod tests {
    use aegis_carbon::simulate::{simulate, SimConfig, SimPolicy};

    use super::*;

    #[test]
    fn runs_merge_equal_hours() {
        assert_eq!(
            runs(&[0, 0, 1, 1, 1, 0]).collect::<Vec<_>>(),
            vec![(0, 2, 0), (2, 5, 1), (5, 6, 0)]
        );
        assert_eq!(runs(&[]).count(), 0);
    }

    #[test]
    fn draws_an_svg_with_every_region() {
        let trace = Trace::parse(
            "datetime_utc,DE,NO\n2023-01-01T00:00:00Z,400,40\n2023-01-01T01:00:00Z,300,60\n",
        )
        .unwrap();
        let deployment = Deployment {
            columns: vec![0, 1],
            rtt_ms: vec![0.0, 30.0],
        };
        let names = vec!["DE".to_owned(), "NO".to_owned()];
        let result = simulate(
            &trace,
            &deployment,
            SimPolicy::Greenest,
            &SimConfig::default(),
        );
        let svg = svg(&trace, &deployment, &names, &result).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("\nDE\n") && svg.contains("\nNO\n"), "{svg}");
        assert!(svg.contains("Region chosen by greenest"));
    }
}
