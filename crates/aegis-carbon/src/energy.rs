//! From a request to grams of CO2: an energy model times grid intensity.

/// Energy attributed to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyModel {
    /// Fixed energy per request, in watt-hours.
    pub wh_per_request: f64,
    /// Energy per megabyte (10^6 bytes) of request plus response body, in watt-hours.
    pub wh_per_mb: f64,
}

impl Default for EnergyModel {
    /// Illustrative defaults (0.05 Wh per request, 0.01 Wh per MB); configure your own. Relative
    /// savings do not depend on them, absolute grams do.
    fn default() -> Self {
        Self {
            wh_per_request: 0.05,
            wh_per_mb: 0.01,
        }
    }
}

impl EnergyModel {
    /// Watt-hours for a request that moved `bytes` of body.
    pub fn watt_hours(&self, bytes: u64) -> f64 {
        self.wh_per_request + self.wh_per_mb * bytes as f64 / 1e6
    }

    /// Grams of CO2eq for a request that moved `bytes`, served at `intensity` gCO2eq/kWh.
    pub fn grams(&self, intensity: f64, bytes: u64) -> f64 {
        self.watt_hours(bytes) / 1000.0 * intensity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_kwh_at_400_grams_is_400_grams() {
        let model = EnergyModel {
            wh_per_request: 1000.0,
            wh_per_mb: 0.0,
        };
        assert_eq!(model.grams(400.0, 0), 400.0);
        let model = EnergyModel {
            wh_per_request: 0.0,
            wh_per_mb: 1.0,
        };
        assert!((model.grams(1000.0, 2_000_000) - 2.0).abs() < 1e-12);
    }
}
