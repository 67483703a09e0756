//! A region's network latency estimate: the minimum of the last few probe samples.
//!
//! The minimum over a short window (as TCP and BBR estimate their min-RTT) ignores one slow
//! answer (a garbage-collection pause, a cold cache) instead of letting it stick, as an average
//! does, and still follows a path that really got slower once the window has moved past the
//! fast samples. Failed probes are never samples: a region that fails fast must not look near.

/// Probe samples kept per region.
pub const LATENCY_WINDOW: usize = 5;

/// The last [`LATENCY_WINDOW`] samples of one region, with a prior to use before the first.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyWindow {
    samples: [f64; LATENCY_WINDOW],
    len: usize,
    next: usize,
    prior: Option<f64>,
}

impl LatencyWindow {
    /// An empty window; `prior_ms` (a configured round-trip time) stands in until the first
    /// sample. A prior that is not a finite non-negative number is ignored.
    pub fn new(prior_ms: Option<f64>) -> Self {
        Self {
            samples: [0.0; LATENCY_WINDOW],
            len: 0,
            next: 0,
            prior: prior_ms.filter(|p| valid(*p)),
        }
    }

    /// Adds one successful probe's time in ms; invalid samples (NaN, negative) are dropped.
    pub fn push(&mut self, sample_ms: f64) {
        if !valid(sample_ms) {
            return;
        }
        self.samples[self.next] = sample_ms;
        self.next = (self.next + 1) % LATENCY_WINDOW;
        self.len = (self.len + 1).min(LATENCY_WINDOW);
    }

    /// The estimate: the smallest recent sample, else the prior, else none.
    pub fn estimate(&self) -> Option<f64> {
        self.samples[..self.len]
            .iter()
            .copied()
            .reduce(f64::min)
            .or(self.prior)
    }

    /// Whether any probe has succeeded yet.
    pub fn measured(&self) -> bool {
        self.len > 0
    }
}

fn valid(ms: f64) -> bool {
    ms.is_finite() && ms >= 0.0
}

#[cfg(test)]
mod tests {
    use quickcheck::quickcheck;

    use super::*;

    #[test]
    fn the_prior_stands_in_until_the_first_sample() {
        let mut w = LatencyWindow::new(Some(150.0));
        assert_eq!((w.estimate(), w.measured()), (Some(150.0), false));
        w.push(20.0);
        assert_eq!((w.estimate(), w.measured()), (Some(20.0), true));
        assert_eq!(LatencyWindow::new(None).estimate(), None);
        assert_eq!(LatencyWindow::new(Some(f64::NAN)).estimate(), None);
    }

    #[test]
    fn one_slow_answer_does_not_stick() {
        let mut w = LatencyWindow::new(None);
        w.push(20.0);
        w.push(1000.0);
        assert_eq!(w.estimate(), Some(20.0));
    }

    #[test]
    fn a_path_that_got_slower_shows_once_the_window_moves_on() {
        let mut w = LatencyWindow::new(None);
        w.push(20.0);
        for _ in 0..LATENCY_WINDOW {
            w.push(80.0);
        }
        assert_eq!(w.estimate(), Some(80.0));
    }

    quickcheck! {
        fn the_estimate_is_a_recent_valid_sample(samples: Vec<f64>) -> bool {
            let mut w = LatencyWindow::new(None);
            for &s in &samples {
                w.push(s);
            }
            let recent: Vec<f64> = samples.iter().copied().filter(|s| valid(*s)).rev().take(LATENCY_WINDOW).collect();
            match w.estimate() {
                None => recent.is_empty(),
                Some(e) => recent.contains(&e) && recent.iter().all(|&s| e <= s),
            }
        }
    }
}
