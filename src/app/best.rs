//! `sft-search best`: the best COMPLETE trial.

use std::process::ExitCode;

use serde_json::{json, Value};

use super::common::{open_existing, print_out};
use crate::cli::{BestArgs, TextOrJson};
use crate::scheduler::display::format_value;
use crate::trial::best_trial;

/// `title (N rows):`, one indented `name = value` line per test metric, then the confusion
/// matrix as a table (rows: true label, columns: predicted label).
fn test_lines(title: &str, test: &serde_json::Map<String, Value>) -> String {
    let mut s = match test.get("rows").and_then(Value::as_u64) {
        Some(n) => format!("{title} ({n} rows):\n"),
        None => format!("{title}:\n"),
    };
    for (k, v) in test {
        if matches!(k.as_str(), "confusion_matrix" | "labels" | "rows") {
            continue;
        }
        let shown = match v {
            Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
            _ => v.as_f64().map(format_value).unwrap_or_else(|| v.to_string()),
        };
        s.push_str(&format!("  {k} = {shown}\n"));
    }
    if let Some(Value::Array(rows)) = test.get("confusion_matrix") {
        let labels: Vec<String> = match test.get("labels") {
            Some(Value::Array(l)) => l.iter().map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string())).collect(),
            _ => (0..rows.len()).map(|i| i.to_string()).collect(),
        };
        s.push_str(&confusion_table(&labels, rows));
    }
    s
}

/// The confusion matrix under `  confusion matrix (rows: true, columns: predicted):`, one
/// right-aligned column per label.
fn confusion_table(labels: &[String], rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.as_array()
                .map(|c| c.iter().map(|x| x.as_u64().map(|n| n.to_string()).unwrap_or_else(|| x.to_string())).collect())
                .unwrap_or_default()
        })
        .collect();
    let label = |i: usize| labels.get(i).cloned().unwrap_or_else(|| i.to_string());
    let first = (0..cells.len()).map(|i| label(i).chars().count()).max().unwrap_or(0);
    let width = cells.iter().flatten().map(|c| c.len()).chain((0..cells.len()).map(|i| label(i).chars().count())).max().unwrap_or(1);
    let mut s = String::from("  confusion matrix (rows: true label, columns: predicted):\n");
    s.push_str(&format!("    {:first$}", ""));
    for i in 0..cells.len() {
        s.push_str(&format!("  {:>width$}", label(i)));
    }
    s.push('\n');
    for (i, row) in cells.iter().enumerate() {
        s.push_str(&format!("    {:<first$}", label(i)));
        for c in row {
            s.push_str(&format!("  {c:>width$}"));
        }
        s.push('\n');
    }
    s
}

/// The `best` lines of a stored model soup.
fn soup_text(soup: &serde_json::Map<String, Value>, metric: &str) -> String {
    let num = |k: &str| soup.get(k).and_then(Value::as_f64).map(format_value).unwrap_or_else(|| "-".into());
    let list = |k: &str| {
        soup.get(k).and_then(Value::as_array).map(|a| a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")).unwrap_or_default()
    };
    let Some(ckpt) = soup.get("checkpoint").and_then(Value::as_str) else {
        return format!(
            "model soup: none kept (of trials {}, no other trial improved on the best alone on the valid split, {metric} = {})\n",
            list("candidates"),
            num("best_single")
        );
    };
    let mut s = format!(
        "model soup of trials {} (greedy, of {}): valid {metric} = {} (best trial alone: {})\n",
        list("ingredients"),
        list("candidates"),
        num("value"),
        num("best_single")
    );
    if let Some(Value::Object(test)) = soup.get("test") {
        s.push_str(&test_lines("soup test split", test));
    }
    s.push_str(&format!("soup checkpoint: {ckpt} (what `export` writes without --trial)\n"));
    s
}

pub fn run(args: &BestArgs) -> anyhow::Result<ExitCode> {
    let open = open_existing(&args.study, args.study_name.as_deref())?;
    let trials = open.store.trials(open.study.id)?;
    let Some(b) = best_trial(&trials, open.study.direction) else {
        anyhow::bail!("study `{}` has no COMPLETE trial yet", open.study.name);
    };
    let params: serde_json::Map<String, Value> = b.params.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
    match args.format {
        TextOrJson::Json => {
            let mut v = json!({"number": b.number, "value": b.value, "params": params});
            if let Some(test) = b.metrics.get("test") {
                v["test"] = test.clone();
            }
            if b.checkpoint.is_some() || b.metrics.contains_key("test") {
                v["checkpoint"] = json!(b.checkpoint);
            }
            if let Some(soup) = open.study.user_attrs.get(crate::trainer::soup::STUDY_ATTR) {
                v["soup"] = soup.clone();
            }
            print_out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
        }
        TextOrJson::Text => {
            let metric = open.study.user_attrs.get("sft:metric").and_then(|m| m.as_str()).unwrap_or("value");
            let mut s = format!("best trial: {} ({metric} = {})\n", b.number, b.value.map(format_value).unwrap_or_default());
            for (k, v) in &b.params {
                s.push_str(&format!("  {k} = {v}\n"));
            }
            if let Some(Value::Object(test)) = b.metrics.get("test") {
                s.push_str(&test_lines("test split", test));
            }
            if let Some(c) = &b.checkpoint {
                s.push_str(&format!("checkpoint: {c}\n"));
            }
            if let Some(Value::Object(soup)) = open.study.user_attrs.get(crate::trainer::soup::STUDY_ATTR) {
                s.push_str(&soup_text(soup, metric));
            }
            print_out(&s)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_lines_show_counts_as_integers_and_the_confusion_matrix_as_a_table() {
        let test = json!({
            "accuracy": 0.75, "confusion_matrix": [[30, 10], [5, 15]], "labels": ["neg", "positive"], "rows": 60, "loss": 0.5
        });
        let Value::Object(test) = test else { unreachable!() };
        let s = test_lines("test split", &test);
        assert_eq!(
            s,
            "test split (60 rows):\n  accuracy = 0.7500\n  loss = 0.5000\n  confusion matrix (rows: true label, columns: predicted):\n                   neg  positive\n    neg             30        10\n    positive         5        15\n"
        );
    }
}
