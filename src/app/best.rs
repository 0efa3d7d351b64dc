//! `sft-search best`: the best COMPLETE trial.

use std::process::ExitCode;

use serde_json::{json, Value};

use super::common::{open_existing, print_out};
use crate::cli::{BestArgs, TextOrJson};
use crate::scheduler::display::format_value;
use crate::trial::best_trial;

/// `title:` and one indented `name = value` line per test metric (the confusion matrix aside).
fn test_lines(title: &str, test: &serde_json::Map<String, Value>) -> String {
    let mut s = format!("{title}:\n");
    for (k, v) in test {
        if k != "confusion_matrix" {
            s.push_str(&format!("  {k} = {}\n", v.as_f64().map(format_value).unwrap_or_else(|| v.to_string())));
        }
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
