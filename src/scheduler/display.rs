//! What the user sees while a study runs: a bar for the study (finished / n_trials, best value
//! so far, ETA) and a line per slot (device, trial, parameters, last value, progress). Without
//! a terminal, one plain line per started and finished trial; with `--quiet`, nothing.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::runner::{Progress, TrialAssignment};
use crate::space::ParamSet;
use crate::trial::{best_trial, Direction, Outcome, TrialNumber, TrialRecord, TrialState};

/// Receives the loop's events. Implementations must be cheap: they run on slot threads.
pub trait Observer: Sync {
    fn note(&self, message: &str);
    fn trial_started(&self, slot: usize, assignment: &TrialAssignment);
    fn trial_progress(&self, slot: usize, number: TrialNumber, intermediate: Option<(i64, f64)>, progress: Option<&Progress>);
    fn trial_finished(
        &self,
        slot: usize,
        number: TrialNumber,
        outcome: &Outcome,
        elapsed: Duration,
        retry: Option<TrialNumber>,
        history: &[TrialRecord],
    );
}

/// Shows nothing.
pub struct Silent;

impl Observer for Silent {
    fn note(&self, _: &str) {}
    fn trial_started(&self, _: usize, _: &TrialAssignment) {}
    fn trial_progress(&self, _: usize, _: TrialNumber, _: Option<(i64, f64)>, _: Option<&Progress>) {}
    fn trial_finished(&self, _: usize, _: TrialNumber, _: &Outcome, _: Duration, _: Option<TrialNumber>, _: &[TrialRecord]) {}
}

/// Formats parameters compactly: `learning_rate=3.0000e-5 batch_size=16`.
pub fn format_params(p: &ParamSet) -> String {
    p.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// Formats an objective value.
pub fn format_value(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        format!("{v:.4e}")
    } else {
        format!("{v:.4}")
    }
}

struct SlotLine {
    device: String,
    number: Option<TrialNumber>,
    params: String,
    last: Option<(i64, f64)>,
    progress: Option<Progress>,
}

/// The terminal display.
pub struct ProgressDisplay {
    multi: MultiProgress,
    main: ProgressBar,
    bars: Vec<ProgressBar>,
    lines: Mutex<Vec<SlotLine>>,
    direction: Direction,
    tty: bool,
}

impl ProgressDisplay {
    pub fn new(slots: &[String], n_trials: Option<u64>, direction: Direction, history: &[TrialRecord]) -> Self {
        let tty = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if tty { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
        let main = multi.add(ProgressBar::new(n_trials.unwrap_or(0)));
        let style = ProgressStyle::with_template("{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} {msg} (elapsed {elapsed}, ETA {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        main.set_style(style.progress_chars("=> "));
        main.set_prefix("trials");
        let bars = slots
            .iter()
            .map(|_| {
                let b = multi.add(ProgressBar::new_spinner());
                b.set_style(ProgressStyle::with_template("  {spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
                b.enable_steady_tick(Duration::from_millis(200));
                b
            })
            .collect();
        let lines =
            slots.iter().map(|d| SlotLine { device: d.clone(), number: None, params: String::new(), last: None, progress: None }).collect();
        let d = ProgressDisplay { multi, main, bars, lines: Mutex::new(lines), direction, tty };
        d.update_main(history);
        for i in 0..slots.len() {
            d.redraw(i);
        }
        d
    }

    fn update_main(&self, history: &[TrialRecord]) {
        let done = history.iter().filter(|t| matches!(t.state, TrialState::Complete | TrialState::Pruned)).count() as u64;
        self.main.set_position(done);
        if let Some(b) = best_trial(history, self.direction) {
            if let Some(v) = b.value {
                self.main.set_message(format!("best {} (trial {})", format_value(v), b.number));
            }
        }
    }

    fn redraw(&self, slot: usize) {
        let Ok(lines) = self.lines.lock() else { return };
        let Some(l) = lines.get(slot) else { return };
        let text = match l.number {
            None => format!("{:<7} idle", l.device),
            Some(n) => {
                let mut s = format!("{:<7} trial {n:<4} {}", l.device, l.params);
                if let Some((step, v)) = l.last {
                    s.push_str(&format!(" | step {step}: {}", format_value(v)));
                }
                if let Some(p) = &l.progress {
                    if let Some(e) = p.epoch {
                        s.push_str(&format!(" | epoch {e:.2}"));
                    }
                    if let Some(loss) = p.loss {
                        s.push_str(&format!(" loss {loss:.4}"));
                    }
                    if let Some(sps) = p.samples_per_s {
                        s.push_str(&format!(" {sps:.1} samples/s"));
                    }
                }
                s
            }
        };
        if let Some(b) = self.bars.get(slot) {
            b.set_message(text);
        }
    }

    fn println(&self, line: &str) {
        if self.tty {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    /// Removes the bars (call once the study has ended).
    pub fn finish(&self) {
        for b in &self.bars {
            b.finish_and_clear();
        }
        self.main.finish();
    }
}

impl Observer for ProgressDisplay {
    fn note(&self, message: &str) {
        self.println(message);
    }

    fn trial_started(&self, slot: usize, a: &TrialAssignment) {
        if let Ok(mut lines) = self.lines.lock() {
            if let Some(l) = lines.get_mut(slot) {
                l.number = Some(a.number);
                l.params = format_params(&a.params);
                l.last = None;
                l.progress = None;
            }
        }
        self.redraw(slot);
        if !self.tty {
            let retry = a.retry_of.map(|r| format!(" (retry of {r})")).unwrap_or_default();
            self.println(&format!("trial {} started on {}{retry}: {}", a.number, a.device, format_params(&a.params)));
        }
    }

    fn trial_progress(&self, slot: usize, _number: TrialNumber, intermediate: Option<(i64, f64)>, progress: Option<&Progress>) {
        if let Ok(mut lines) = self.lines.lock() {
            if let Some(l) = lines.get_mut(slot) {
                if intermediate.is_some() {
                    l.last = intermediate;
                }
                if let Some(p) = progress {
                    l.progress = Some(p.clone());
                }
            }
        }
        self.redraw(slot);
    }

    fn trial_finished(
        &self,
        slot: usize,
        number: TrialNumber,
        outcome: &Outcome,
        elapsed: Duration,
        retry: Option<TrialNumber>,
        history: &[TrialRecord],
    ) {
        let what = match outcome {
            Outcome::Complete { value } => format!("COMPLETE value {}", format_value(*value)),
            Outcome::Pruned { step, value } => {
                format!("PRUNED at step {step}{}", value.map(|v| format!(" (value {})", format_value(v))).unwrap_or_default())
            }
            Outcome::Failed { reason } => format!("FAIL: {reason}"),
        };
        let retry = retry.map(|r| format!("; runs again as trial {r}")).unwrap_or_default();
        self.println(&format!("trial {number} {what} in {:.1}s{retry}", elapsed.as_secs_f64()));
        if let Ok(mut lines) = self.lines.lock() {
            if let Some(l) = lines.get_mut(slot) {
                l.number = None;
            }
        }
        self.redraw(slot);
        self.update_main(history);
    }
}
