//! Extra read-only queries for reports: the distribution each parameter was stored with
//! (Optuna's `trial_params.distribution_json`), so plots know log scales and choice order
//! even for a study opened from a bare `.db` file.

use crate::space::Distribution;

use super::{Result, Store};

impl Store {
    /// Each parameter of the study with the distribution of its most recent stored value,
    /// in the order parameters first appeared. Unreadable distributions are skipped.
    pub fn param_distributions(&self, study_id: i64) -> Result<Vec<(String, Distribution)>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT p.param_name, p.distribution_json FROM trial_params p JOIN trials t ON t.trial_id = p.trial_id
                 WHERE t.study_id = ?1 ORDER BY p.param_id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st.query_map([study_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(|e| self.err(e))?;
        let mut out: Vec<(String, Distribution)> = Vec::new();
        for row in rows {
            let (name, json) = row.map_err(|e| self.err(e))?;
            let Some(dist) = Distribution::from_optuna_json(&json) else { continue };
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = dist,
                None => out.push((name, dist)),
            }
        }
        Ok(out)
    }
}
