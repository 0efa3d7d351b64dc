//! The study report: one self-contained HTML file (inline CSS, inline SVG plots, a few lines
//! of inline JavaScript to sort the trials table; nothing fetched from the network) with the
//! study summary, the best trial, every trial, and every plot. Written atomically.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::axis::short_number;
use super::render::{Plot, PlotSet};
use super::study::StudyData;
use super::ReportError;
use crate::config::StudyConfig;
use crate::storage::{parse_time, seconds_between, Store, StudyInfo};
use crate::trial::{TrialRecord, TrialState};

/// Loads the study, computes every plot and writes the report to `out` (a temporary file
/// renamed into place, so a reader never sees half a report). Returns `out`.
pub fn write_report(store: &Store, study: &StudyInfo, config: Option<&StudyConfig>, out: &Path) -> Result<PathBuf, ReportError> {
    let data = StudyData::load(store, study, config)?;
    let plots = PlotSet::compute(&data, None)?;
    let html = render_html(&data, &plots)?;
    write_atomically(out, html.as_bytes())?;
    Ok(out.to_path_buf())
}

/// Where a study's report goes by default: `<study name>-report.html` beside the study file.
pub fn default_report_path(config: &StudyConfig) -> PathBuf {
    config.dir.join(format!("{}-report.html", config.name))
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let io = |source| ReportError::Io { path: path.to_path_buf(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "report.html".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A duration in words: `12.3 s`, `4 min 05 s`, `2 h 03 min`.
pub fn fmt_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return String::new();
    }
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else if secs < 3600.0 {
        format!("{} min {:02} s", (secs / 60.0).floor(), (secs % 60.0).floor())
    } else {
        format!("{} h {:02} min", (secs / 3600.0).floor(), ((secs % 3600.0) / 60.0).floor())
    }
}

/// How long a trial ran, when it has finished.
pub fn trial_seconds(t: &TrialRecord) -> Option<f64> {
    seconds_between(t.started_at.as_deref()?, t.finished_at.as_deref()?).filter(|s| *s >= 0.0)
}

/// The fit diagnosis stored with a trial (`metrics.fit`), as text.
pub fn fit_of(t: &TrialRecord) -> Option<String> {
    t.metrics.get("fit").map(|f| f.as_str().map(str::to_string).unwrap_or_else(|| f.to_string()))
}

/// Study-wide figures for the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub counts: Vec<(TrialState, usize)>,
    /// First start to last finish, in seconds.
    pub wall_seconds: Option<f64>,
    /// The sum of the finished trials' durations, in hours.
    pub device_hours: f64,
}

impl Summary {
    pub fn compute(data: &StudyData) -> Summary {
        let counts =
            TrialState::ALL.iter().map(|&s| (s, data.trials.iter().filter(|t| t.state == s).count())).filter(|c| c.1 > 0).collect();
        let first = data.trials.iter().filter_map(|t| t.started_at.as_deref().and_then(parse_time)).min();
        let last =
            data.trials.iter().flat_map(|t| [t.started_at.as_deref(), t.finished_at.as_deref()]).flatten().filter_map(parse_time).max();
        let wall_seconds = match (first, last) {
            (Some(a), Some(b)) => Some((b - a).num_milliseconds() as f64 / 1000.0),
            _ => None,
        };
        let device_hours = data.trials.iter().filter_map(trial_seconds).sum::<f64>() / 3600.0;
        Summary { counts, wall_seconds, device_hours }
    }
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;margin:24px auto;max-width:1280px;padding:0 16px;color:#222;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f8}table.sortable th{cursor:pointer;user-select:none;white-space:nowrap}
table.sortable th[data-dir=asc]::after{content:' \\25B2'}table.sortable th[data-dir=desc]::after{content:' \\25BC'}
td.num{text-align:right;font-variant-numeric:tabular-nums}.kv th{width:14em}
tr.COMPLETE td:nth-child(2){color:#1f77b4}tr.PRUNED td:nth-child(2){color:#d9700b}tr.FAIL td:nth-child(2){color:#d62728}
tr.best{background:#eaf7ea}.scroll{overflow-x:auto}
.plots{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0;border:1px solid #e4e4e4;padding:8px;flex:0 1 610px;max-width:100%;box-sizing:border-box}
figure.wide{flex:1 1 100%}
figure svg{max-width:100%;height:auto;display:block}figcaption{font-weight:600;margin-bottom:4px}
.missing{color:#777;font-style:italic;padding:1em}.err{color:#b00;max-width:30em}pre{background:#f6f6f6;padding:8px;overflow-x:auto}";

const JS: &str = "document.querySelectorAll('table.sortable').forEach(function(table){
var heads=table.tHead.rows[0].cells;Array.prototype.forEach.call(heads,function(th,i){th.addEventListener('click',function(){
var asc=th.getAttribute('data-dir')!=='asc';Array.prototype.forEach.call(heads,function(h){h.removeAttribute('data-dir');});
th.setAttribute('data-dir',asc?'asc':'desc');var body=table.tBodies[0];
var key=function(r){var c=r.cells[i];var s=c.hasAttribute('data-sort')?c.getAttribute('data-sort'):c.textContent;var n=parseFloat(s);return isNaN(n)?{n:false,v:s}:{n:true,v:n};};
var rows=Array.prototype.slice.call(body.rows).sort(function(a,b){var x=key(a),y=key(b);var c;
if(x.n&&y.n){c=x.v-y.v;}else if(x.n!==y.n){return x.n?-1:1;}else{c=String(x.v).localeCompare(String(y.v));}return asc?c:-c;});
rows.forEach(function(r){body.appendChild(r);});});});});";

/// The whole report page.
pub fn render_html(data: &StudyData, plots: &PlotSet) -> Result<String, ReportError> {
    let mut h = String::new();
    let title = format!("sft-search report: {}", data.name);
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{CSS}</style></head><body>",
        esc(&title)
    );
    let _ = writeln!(h, "<h1>{}</h1>", esc(&title));
    summary_section(&mut h, data);
    best_section(&mut h, data);
    soup_section(&mut h, data);
    trials_section(&mut h, data);
    h.push_str("<h2>Plots</h2>\n<div class=\"plots\">\n");
    for item in &plots.items {
        let wide = matches!(item.plot, Ok(Plot::Parallel(_) | Plot::Timeline(_)));
        let class = if wide { " class=\"wide\"" } else { "" };
        let _ = writeln!(h, "<figure id=\"plot-{}\"{class}><figcaption>{}</figcaption>", esc(&item.stem), esc(&item.title));
        match &item.plot {
            Ok(p) => {
                let svg = p.to_svg(&item.stem)?;
                h.push_str(strip_xml_header(&svg));
            }
            Err(e) => {
                let _ = write!(h, "<p class=\"missing\">{}</p>", esc(&e.to_string()));
            }
        }
        h.push_str("</figure>\n");
    }
    h.push_str("</div>\n");
    if let Some(text) = stored_study_file(data) {
        let _ = writeln!(h, "<h2>Study file</h2>\n<pre>{}</pre>", esc(&text));
    }
    let _ = writeln!(
        h,
        "<p style=\"color:#888;font-size:.8em\">Written by sft-search {} at {}.</p>",
        env!("CARGO_PKG_VERSION"),
        esc(&crate::storage::now_text())
    );
    let _ = writeln!(h, "<script>{JS}</script>\n</body></html>");
    Ok(h)
}

fn stored_study_file(data: &StudyData) -> Option<String> {
    data.study_file.clone()
}

fn strip_xml_header(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

pub(super) fn summary_section(h: &mut String, data: &StudyData) {
    let s = Summary::compute(data);
    h.push_str("<h2>Summary</h2>\n<table class=\"kv\">\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    };
    row("study", data.name.clone());
    row("objective", format!("{} {}", data.direction.as_optuna().to_lowercase(), data.metric));
    row("sampler", data.sampler.clone().unwrap_or_else(|| "unknown".into()));
    let finished = data.trials.iter().filter(|t| matches!(t.state, TrialState::Complete | TrialState::Pruned)).count();
    row(
        "budget",
        match data.n_trials {
            Some(n) if finished as u64 > n => {
                format!("{finished} trials complete or pruned (the study file asks for {n}; later runs raised it with --n-trials)")
            }
            Some(n) => format!("{finished} of {n} trials complete or pruned"),
            None => format!("{finished} trials complete or pruned (no n_trials)"),
        },
    );
    row("trials", s.counts.iter().map(|(st, n)| format!("{n} {}", st.as_str().to_lowercase())).collect::<Vec<_>>().join(", "));
    row("time used", s.wall_seconds.map(fmt_duration).unwrap_or_else(|| "–".into()) + " (first start to last finish)");
    row("device hours", format!("{:.2} h (sum of trial durations)", s.device_hours));
    h.push_str("</table>\n");
}

fn numeric_entries(m: &Map<String, Value>) -> Vec<(String, String)> {
    m.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "test" | "fit" | "confusion_matrix" | "labels"))
        .filter_map(|(k, v)| match v {
            Value::Number(n) => n.as_f64().map(|x| (k.clone(), short_number(x))),
            Value::String(s) => Some((k.clone(), s.clone())),
            Value::Bool(b) => Some((k.clone(), b.to_string())),
            _ => None,
        })
        .collect()
}

/// Whether a trial metric describes the run (when its best evaluation came, how long it took,
/// how big the model was) rather than a measurement on the valid split.
fn is_run_fact(key: &str) -> bool {
    key.starts_with("best_")
        || key.starts_with("gpu_")
        || matches!(
            key,
            "epoch"
                | "epochs_run"
                | "learning_rate"
                | "samples_per_s"
                | "setup_s"
                | "train_s"
                | "total_params"
                | "trainable_params"
                | "stopped_early"
        )
}

fn best_section(h: &mut String, data: &StudyData) {
    h.push_str("<h2>Best trial</h2>\n");
    let Some(b) = data.best() else {
        h.push_str("<p class=\"missing\">No COMPLETE trial yet.</p>\n");
        return;
    };
    let _ =
        writeln!(h, "<p>Trial <b>{}</b>: {} = <b>{}</b></p>", b.number, esc(&data.metric), b.value.map(short_number).unwrap_or_default());
    h.push_str("<table class=\"kv\">\n");
    for (k, v) in &b.params {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v.to_string()));
    }
    h.push_str("</table>\n");
    // Valid metrics: the trial-wide set, else the last epoch's.
    let mut valid = numeric_entries(&b.metrics);
    if valid.is_empty() {
        if let Some((_, last)) = data.best_steps.last() {
            valid = numeric_entries(last);
        }
    }
    // The run's own facts (epochs, timings, sizes) apart from what it measured.
    let (run, valid): (Vec<_>, Vec<_>) = valid.into_iter().partition(|(k, _)| is_run_fact(k));
    let run: Vec<(String, String)> = run
        .into_iter()
        .filter(|(k, _)| k != "best_checkpoint") // shown under Other as `checkpoint`
        .map(|(k, v)| (if k == "learning_rate" { "learning_rate at the end".to_string() } else { k }, v))
        .collect();
    kv_table(h, "Valid metrics", &valid);
    if let Some(Value::Object(test)) = b.metrics.get("test") {
        kv_table(h, "Test metrics", &numeric_entries(test));
    }
    kv_table(h, "Run", &run);
    let mut extra = Vec::new();
    if let Some(f) = fit_of(b) {
        extra.push(("fit diagnosis".to_string(), f));
    }
    if let Some(c) = &b.checkpoint {
        extra.push(("checkpoint".to_string(), c.clone()));
    }
    kv_table(h, "Other", &extra);
}

/// A titled two-column table of `entries` (nothing when there are none).
fn kv_table(h: &mut String, title: &str, entries: &[(String, String)]) {
    if entries.is_empty() {
        return;
    }
    let _ = writeln!(h, "<h3>{}</h3>\n<table class=\"kv\">", esc(title));
    for (k, v) in entries {
        let _ = writeln!(h, "<tr><th>{}</th><td class=\"num\">{}</td></tr>", esc(k), esc(v));
    }
    h.push_str("</table>\n");
}

fn soup_section(h: &mut String, data: &StudyData) {
    let Some(soup) = &data.soup else { return };
    let list = |k: &str| {
        soup.get(k).and_then(Value::as_array).map(|a| a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")).unwrap_or_default()
    };
    let num = |k: &str| soup.get(k).and_then(Value::as_f64).map(short_number).unwrap_or_else(|| "–".into());
    h.push_str("<h2>Model soup</h2>\n");
    if soup.get("checkpoint").and_then(Value::as_str).is_none() {
        let _ = writeln!(
            h,
            "<p>Greedy soup of trials {}: no other trial improved on the best trial alone on the valid split ({} = {}), so the best trial is the study's model.</p>",
            esc(&list("candidates")),
            esc(&data.metric),
            num("best_single")
        );
        return;
    }
    let _ = writeln!(
        h,
        "<p>Greedy soup (weights averaged) of trials <b>{}</b>, of candidates {}: valid {} = <b>{}</b> (best trial alone: {}). <code>export</code> writes this model.</p>",
        esc(&list("ingredients")),
        esc(&list("candidates")),
        esc(&data.metric),
        num("value"),
        num("best_single")
    );
    if let Some(Value::Object(test)) = soup.get("test") {
        kv_table(h, "Soup test metrics", &numeric_entries(test));
    }
}

fn trials_section(h: &mut String, data: &StudyData) {
    let best = data.best().map(|b| b.number);
    let names = data.param_names();
    h.push_str("<h2>Trials</h2>\n<p>Click a column to sort.</p>\n<div class=\"scroll\"><table class=\"sortable\" id=\"trials\"><thead><tr><th>#</th><th>state</th>");
    let _ = write!(h, "<th>{}</th>", esc(&data.metric));
    for n in &names {
        let _ = write!(h, "<th>{}</th>", esc(n));
    }
    h.push_str("<th>duration</th><th>device</th><th>fit</th><th>error</th></tr></thead>\n<tbody>\n");
    for t in &data.trials {
        let class =
            if Some(t.number) == best && t.state == TrialState::Complete { format!("{} best", t.state) } else { t.state.to_string() };
        let _ = write!(h, "<tr class=\"{class}\"><td class=\"num\">{}</td><td>{}</td>", t.number, t.state);
        let _ = match t.value.filter(|v| !v.is_nan()) {
            Some(v) => write!(h, "<td class=\"num\" data-sort=\"{v}\">{}</td>", short_number(v)),
            None => write!(h, "<td data-sort=\"\"></td>"),
        };
        for n in &names {
            let _ = match t.params.get(n) {
                Some(v) => match v.as_f64() {
                    Some(x) => write!(h, "<td class=\"num\" data-sort=\"{x}\">{}</td>", esc(&v.to_string())),
                    None => write!(h, "<td>{}</td>", esc(&v.to_string())),
                },
                None => write!(h, "<td></td>"),
            };
        }
        let _ = match trial_seconds(t) {
            Some(s) => write!(h, "<td class=\"num\" data-sort=\"{s}\">{}</td>", fmt_duration(s)),
            None => write!(h, "<td data-sort=\"\"></td>"),
        };
        let _ = writeln!(
            h,
            "<td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
            esc(t.device.as_deref().unwrap_or("")),
            esc(&fit_of(t).unwrap_or_default()),
            esc(t.error.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</tbody></table></div>\n");
}
