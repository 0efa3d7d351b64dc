//! What a study's trials were trained and measured with: the parts of the study file whose
//! change makes new trials' values incomparable with the recorded ones (the metric, the
//! objective, `[model]`, `[data]`, `[train]`), and the differences between two versions of
//! a study file in those parts. (The search space has its own check, by hash.)

use toml::{Table, Value};

/// Keys that change how a trial runs but not what it measures.
const NEUTRAL: &[(&str, &str)] = &[("objective", "step_time"), ("objective", "cwd"), ("train", "threads"), ("train", "keep_checkpoints")];

/// Tables compared whole, key by key.
const TABLES: &[&str] = &["objective", "model", "data", "train"];

/// One difference, e.g. "`[train] max_length`: 48 → 40".
fn difference(table: &str, key: &str, old: Option<&Value>, new: Option<&Value>) -> String {
    let show = |v: Option<&Value>| v.map_or_else(|| "(not set)".to_string(), |v| v.to_string());
    format!("`[{table}] {key}`: {} → {}", show(old), show(new))
}

/// The differences between the study file the trials ran with (`stored`) and `current`, in
/// the parts that decide what a trial's value means; empty when there are none or when
/// `stored` cannot be read (a study written by another tool).
pub fn setup_differences(stored: &str, current: &str) -> Vec<String> {
    let (Ok(old), Ok(new)) = (stored.parse::<Table>(), current.parse::<Table>()) else { return Vec::new() };
    let mut out = Vec::new();
    let get = |t: &Table, table: &str, key: &str| t.get(table).and_then(Value::as_table).and_then(|t| t.get(key)).cloned();
    let (old_metric, new_metric) = (get(&old, "study", "metric"), get(&new, "study", "metric"));
    if old_metric != new_metric {
        out.push(difference("study", "metric", old_metric.as_ref(), new_metric.as_ref()));
    }
    let empty = Table::new();
    for &table in TABLES {
        let o = old.get(table).and_then(Value::as_table).unwrap_or(&empty);
        let n = new.get(table).and_then(Value::as_table).unwrap_or(&empty);
        let mut keys: Vec<&String> = o.keys().collect();
        keys.extend(n.keys().filter(|k| !o.contains_key(*k)));
        for key in keys {
            if NEUTRAL.contains(&(table, key.as_str())) {
                continue;
            }
            if o.get(key) != n.get(key) {
                out.push(difference(table, key, o.get(key), n.get(key)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str =
        "[study]\nname = \"s\"\nmetric = \"accuracy\"\nn_trials = 8\n\n[train]\nmax_length = 48\nthreads = 2\n\n[data]\npath = \"a.csv\"\n";

    #[test]
    fn only_what_changes_the_measured_value_counts() {
        assert!(setup_differences(FILE, FILE).is_empty());
        // Budget, comments, layout, threads: not a difference.
        let same = FILE.replace("n_trials = 8", "n_trials = 20 # more").replace("threads = 2", "threads = 1").replace("\n\n", "\n");
        assert!(setup_differences(FILE, &same).is_empty(), "{:?}", setup_differences(FILE, &same));
        let changed = FILE.replace("max_length = 48", "max_length = 40").replace("\"accuracy\"", "\"f1\"")
            + "split_seed = 7\n[model]\npath = \"m\"\n";
        assert_eq!(
            setup_differences(FILE, &changed),
            vec![
                "`[study] metric`: \"accuracy\" → \"f1\"",
                "`[model] path`: (not set) → \"m\"",
                "`[data] split_seed`: (not set) → 7",
                "`[train] max_length`: 48 → 40",
            ]
        );
        assert!(setup_differences("not toml [", FILE).is_empty(), "an unreadable stored file says nothing");
    }
}
