//! What the read-only subcommands share: finding the store and the study from a study file
//! (or, for studies made elsewhere — e.g. by Optuna — straight from a `.db` file).

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::UsageError;
use crate::config::StudyConfig;
use crate::storage::{Store, StudyInfo};

/// An opened study.
pub struct OpenStudy {
    pub config: Option<StudyConfig>,
    pub store: Store,
    pub study: StudyInfo,
}

/// Loads a study file, turning its errors into usage errors (exit status 2).
pub fn load_config(path: &Path) -> anyhow::Result<StudyConfig> {
    StudyConfig::load(path).map_err(|e| anyhow::Error::new(UsageError(e.to_string())))
}

/// Opens an existing study named by a study file, or by a SQLite file (`--study` picks the
/// study when the file holds several).
pub fn open_existing(target: &Path, study_name: Option<&str>) -> anyhow::Result<OpenStudy> {
    let is_db = matches!(target.extension().and_then(|e| e.to_str()), Some("db" | "sqlite" | "sqlite3"));
    if is_db {
        let store = Store::open_existing(target).map_err(|e| UsageError(e.to_string()))?;
        let names = store.study_names()?;
        let name = match (study_name, names.as_slice()) {
            (Some(n), _) => n.to_string(),
            (None, [only]) => only.clone(),
            (None, []) => return Err(UsageError(format!("{} holds no study", target.display())).into()),
            (None, many) => {
                return Err(
                    UsageError(format!("{} holds several studies ({}); pick one with --study", target.display(), many.join(", "))).into()
                )
            }
        };
        let study = store.study(&name).map_err(|e| UsageError(e.to_string()))?;
        return Ok(OpenStudy { config: None, store, study });
    }
    let config = load_config(target)?;
    let store = Store::open_existing(&config.storage).map_err(|e| UsageError(format!("study `{}`: {e}", config.name)))?;
    let name = study_name.unwrap_or(&config.name).to_string();
    let study = store.study(&name).map_err(|e| UsageError(e.to_string()))?;
    Ok(OpenStudy { config: Some(config), store, study })
}

/// A path for display, relative to the working directory where possible.
pub fn shown(p: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    p.strip_prefix(&cwd).map(PathBuf::from).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}

/// Writes text to stdout, treating a closed pipe (`| head`) as success.
pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

/// Metrics worth a line (a test evaluation, scored predictions), as `accuracy 0.8372, f1_macro
/// 0.8362, …`: `metric` first, then the usual ones of classification (accuracy, macro F1, ROC
/// AUC) or regression (R², MAE), and the loss.
pub fn metrics_summary(metrics: &serde_json::Map<String, serde_json::Value>, metric: &str) -> String {
    let show = |k: &str| metrics.get(k).and_then(|v| v.as_f64()).map(|v| format!("{k} {v:.4}"));
    let mut keys = vec![metric];
    // Token classification (the only one with a bare `precision`): entity scores first;
    // multi-label (the only one with `f1_micro`): the pooled scores.
    let others: &[&str] = if metrics.contains_key("precision") {
        &["f1", "precision", "recall", "accuracy", "loss"]
    } else if metrics.contains_key("f1_micro") {
        &["f1_micro", "f1_macro", "accuracy", "roc_auc", "loss"]
    } else {
        &["accuracy", "f1_macro", "roc_auc", "r2", "mae", "loss"]
    };
    for &k in others {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter().filter_map(show).collect::<Vec<_>>().join(", ")
}
