//! Hyperband as Optuna's `HyperbandPruner` does it: several ASHA brackets that differ in how
//! early they start pruning (bracket `i` has `min_early_stopping_rate = i`), with
//! `⌊log_η(max_resource / min_resource)⌋ + 1` brackets. Each trial belongs to one bracket,
//! chosen from its number alone — `crc32("<study name>_<number>")` modulo the brackets'
//! total budget, each bracket getting `⌈n · η^s / (s + 1)⌉` of it (`s = n − 1 − i`), exactly as
//! Optuna assigns them — and is compared only with trials of its own bracket.

use super::asha::AshaPruner;
use super::Pruner;
use crate::scheduler::Decision;
use crate::trial::{Direction, PruningRecord, TrialNumber, TrialRecord};

#[derive(Debug, Clone, PartialEq)]
pub struct HyperbandPruner {
    brackets: Vec<AshaPruner>,
    /// Each bracket's share of trials.
    budgets: Vec<u64>,
    /// The prefix of the hashed text (Optuna hashes `"{study_name}_{number}"`).
    salt: String,
}

impl HyperbandPruner {
    /// `min_resource ≥ 1`, `max_resource > min_resource`, `reduction_factor ≥ 2` (the config
    /// layer checks these; out-of-range values are clamped here rather than panicking).
    pub fn new(min_resource: i64, max_resource: i64, reduction_factor: u32, bootstrap_count: usize, study_name: &str) -> Self {
        let min = min_resource.max(1);
        let max = max_resource.max(min);
        let eta = reduction_factor.max(2);
        let n = n_brackets(min, max, eta);
        let brackets = (0..n)
            .map(|i| AshaPruner {
                min_resource: min,
                reduction_factor: eta,
                min_early_stopping_rate: i,
                max_resource: Some(max),
                bootstrap_count,
            })
            .collect();
        let budgets = (0..n)
            .map(|i| {
                let s = n - 1 - i;
                let num = u64::from(n).saturating_mul(u64::from(eta).saturating_pow(s));
                num.div_ceil(u64::from(s) + 1)
            })
            .collect();
        HyperbandPruner { brackets, budgets, salt: study_name.to_string() }
    }

    pub fn n_brackets(&self) -> usize {
        self.brackets.len()
    }

    /// The bracket of trial `number`.
    pub fn bracket_of(&self, number: TrialNumber) -> u32 {
        let total: u64 = self.budgets.iter().fold(0u64, |a, b| a.saturating_add(*b));
        if total == 0 {
            return 0;
        }
        let mut n = u64::from(crc32(format!("{}_{}", self.salt, number).as_bytes())) % total;
        for (i, b) in self.budgets.iter().enumerate() {
            if n < *b {
                return i as u32;
            }
            n -= b;
        }
        0
    }

    fn bracket(&self, number: TrialNumber) -> &AshaPruner {
        let i = self.bracket_of(number) as usize;
        &self.brackets[i.min(self.brackets.len() - 1)]
    }
}

/// `⌊log_η(max / min)⌋ + 1`, in integers (no floating-point edge cases at exact powers).
fn n_brackets(min: i64, max: i64, eta: u32) -> u32 {
    let mut n = 1;
    let mut r = min;
    while let Some(next) = r.checked_mul(i64::from(eta)) {
        if next > max {
            break;
        }
        r = next;
        n += 1;
    }
    n
}

/// CRC-32 (IEEE, as Python's `binascii.crc32`).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

impl Pruner for HyperbandPruner {
    fn decide(&self, number: TrialNumber, values: &[(i64, f64)], history: &[TrialRecord], direction: Direction) -> Decision {
        let b = self.bracket_of(number);
        let mine: Vec<TrialRecord> = history.iter().filter(|t| self.bracket_of(t.number) == b).cloned().collect();
        self.bracket(number).decide(number, values, &mine, direction)
    }

    fn needs_history(&self, number: TrialNumber, values: &[(i64, f64)]) -> bool {
        self.bracket(number).needs_history(number, values)
    }

    fn record(&self, number: TrialNumber, values: &[(i64, f64)]) -> PruningRecord {
        PruningRecord { bracket: Some(self.bracket_of(number)), ..self.bracket(number).record(number, values) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::ParamSet;
    use crate::trial::TrialState;

    #[test]
    fn crc32_matches_python() {
        // Values from Python's binascii.crc32.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b"study_0"), 0x15f3_771c);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn brackets_and_budgets_follow_optuna() {
        // min 1, max 27, η 3 → 4 brackets with budgets ⌈4·27/4⌉, ⌈4·9/3⌉, ⌈4·3/2⌉, ⌈4/1⌉.
        let h = HyperbandPruner::new(1, 27, 3, 0, "s");
        assert_eq!(h.n_brackets(), 4);
        assert_eq!(h.budgets, vec![27, 12, 6, 4]);
        assert_eq!(h.brackets[2].rung_step(0), Some(9));
        assert_eq!(h.brackets[3].rung_step(0), None, "the last bracket never prunes");
        assert_eq!(n_brackets(1, 26, 3), 3);
        assert_eq!(HyperbandPruner::new(4, 4, 3, 0, "s").n_brackets(), 1);
        // Extreme settings neither overflow nor panic.
        let huge = HyperbandPruner::new(1, i64::MAX, 2, 0, "s");
        assert_eq!(huge.n_brackets(), 63);
        assert!(huge.bracket_of(5) < 63);
        assert_eq!(HyperbandPruner::new(1, i64::MAX, u32::MAX, 0, "s").n_brackets(), 2);
    }

    #[test]
    fn bracket_assignment_is_deterministic_and_spread() {
        let a = HyperbandPruner::new(1, 27, 3, 0, "study");
        let b = HyperbandPruner::new(1, 27, 3, 0, "study");
        // What Optuna 5.0.0's HyperbandPruner(1, 27, 3)._get_bracket_id gives for study "study".
        let optuna = [1, 0, 1, 0, 0, 1, 1, 0, 0, 3, 1, 2, 1, 1, 0, 1, 3, 0, 1, 1];
        assert_eq!((0..20).map(|n| a.bracket_of(n)).collect::<Vec<_>>(), optuna);
        let mut counts = [0usize; 4];
        for n in 0..490 {
            assert_eq!(a.bracket_of(n), b.bracket_of(n));
            counts[a.bracket_of(n) as usize] += 1;
        }
        // Shares 27:12:6:4 of 49, roughly.
        assert!(counts[0] > counts[1] && counts[1] > counts[3], "{counts:?}");
        assert!(counts.iter().all(|c| *c > 0), "{counts:?}");
        // Another study name shuffles the assignment.
        let c = HyperbandPruner::new(1, 27, 3, 0, "other");
        assert!((0..50).any(|n| a.bracket_of(n) != c.bracket_of(n)));
    }

    #[test]
    fn compares_only_within_the_bracket() {
        let h = HyperbandPruner::new(1, 27, 3, 0, "s");
        // Two trials in bracket 0 and two in another bracket.
        let in0: Vec<u64> = (0..200).filter(|n| h.bracket_of(*n) == 0).take(3).collect();
        let other: Vec<u64> = (0..200).filter(|n| h.bracket_of(*n) == 1).take(3).collect();
        let mk = |n: u64, v: f64| {
            let mut t = TrialRecord::new(n, TrialState::Complete, ParamSet::new(), Some(v));
            t.intermediate = (1..=27).map(|s| (s, v)).collect();
            t
        };
        // Strong trials in the other bracket do not count against a bracket-0 trial.
        let hist = vec![mk(other[0], 0.0), mk(other[1], 0.0), mk(in0[0], 5.0)];
        assert_eq!(h.decide(in0[1], &[(1, 1.0)], &hist, Direction::Minimize), Decision::Continue);
        // A worse value within bracket 0 is pruned at rung 0 (step 1)... once η trials are there.
        let hist = vec![mk(in0[0], 0.0), mk(other[0], 9.0), mk(other[1], 9.0)];
        assert_eq!(h.decide(in0[1], &[(1, 1.0)], &hist, Direction::Minimize), Decision::Prune);
        let r = h.record(in0[1], &[(1, 1.0)]);
        assert_eq!(r.bracket, Some(0));
        assert_eq!(r.rungs.len(), 1);
    }
}
