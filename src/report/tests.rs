//! Tests of the plot data, rendering and the report, on in-memory fixtures (exact times and
//! devices) and on a real store.

use std::path::Path;

use serde_json::{json, Map};

use super::axis::Scale;
use super::confusion::ConfusionMatrix;
use super::contour::{ContourPlot, GRID};
use super::history::HistoryPlot;
use super::importance::ImportancePlot;
use super::learning::LearningCurves;
use super::parallel::ParallelCoordinates;
use super::render::{Plot, PlotSet};
use super::study::StudyData;
use super::timeline::DeviceTimeline;
use super::train_valid::TrainValidLoss;
use crate::space::{Distribution, Param, ParamSet, ParamValue, SearchSpace};
use crate::storage::{Budget, Claim, Owner, Store, StudySpec};
use crate::trial::{Direction, Outcome, TrialRecord, TrialState};

fn lr_dist() -> Distribution {
    Distribution::Float { low: 1e-6, high: 1e-2, log: true, step: None }
}
fn bs_dist() -> Distribution {
    Distribution::Categorical { choices: vec![ParamValue::Int(8), ParamValue::Int(16), ParamValue::Int(32)] }
}
fn ep_dist() -> Distribution {
    Distribution::Int { low: 1, high: 10, step: 1, log: false }
}

fn params(lr: f64, bs: i64, ep: i64) -> ParamSet {
    [
        ("learning_rate".to_string(), ParamValue::Float(lr)),
        ("batch_size".to_string(), ParamValue::Int(bs)),
        ("epochs".to_string(), ParamValue::Int(ep)),
    ]
    .into_iter()
    .collect()
}

fn trial(n: u64, state: TrialState, value: Option<f64>, p: ParamSet) -> TrialRecord {
    TrialRecord::new(n, state, p, value)
}

fn data(direction: Direction, trials: Vec<TrialRecord>) -> StudyData {
    StudyData {
        name: "fixture".into(),
        direction,
        metric: "loss".into(),
        trials,
        params: vec![("learning_rate".into(), lr_dist()), ("batch_size".into(), bs_dist()), ("epochs".into(), ep_dist())],
        conditions: Vec::new(),
        sampler: Some("random (seed 0)".into()),
        sampler_is_gp: false,
        n_trials: Some(10),
        best_steps: Vec::new(),
        study_file: None,
        soup: None,
    }
}

/// Six finished trials (minimize): complete 5, 3, pruned 1, failed, complete 4, 2.
fn six() -> StudyData {
    let t = vec![
        trial(0, TrialState::Complete, Some(5.0), params(1e-5, 8, 2)),
        trial(1, TrialState::Complete, Some(3.0), params(1e-3, 16, 4)),
        trial(2, TrialState::Pruned, Some(1.0), params(1e-4, 32, 6)),
        trial(3, TrialState::Fail, None, params(1e-4, 32, 6)),
        trial(4, TrialState::Complete, Some(4.0), params(3e-4, 16, 8)),
        trial(5, TrialState::Complete, Some(2.0), params(2e-4, 32, 3)),
    ];
    data(Direction::Minimize, t)
}

/// The text elements of an SVG, trimmed.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text").skip(1).filter_map(|t| Some(t[t.find('>')? + 1..t.find("</text>")?].trim().to_string())).collect()
}

#[test]
fn history_best_so_far_and_marks() {
    let h = HistoryPlot::compute(&six()).expect("history");
    assert_eq!(h.best_so_far, vec![(0, 5.0), (1, 3.0), (4, 3.0), (5, 2.0)], "pruned values never count as best");
    assert_eq!(h.numbers_in(TrialState::Pruned), vec![2]);
    assert_eq!(h.numbers_in(TrialState::Fail), vec![3]);
    assert_eq!(h.points.iter().find(|p| p.number == 3).and_then(|p| p.value), None);
    assert_eq!(h.points.len(), 6);

    // A pruned trial without a value (as Optuna may store it) shows its last intermediate value.
    let mut d = six();
    if let Some(t) = d.trials.iter_mut().find(|t| t.number == 2) {
        t.value = None;
        t.intermediate = vec![(0, 9.0), (1, 7.5)];
    }
    let h = HistoryPlot::compute(&d).expect("history");
    assert_eq!(h.points.iter().find(|p| p.number == 2).and_then(|p| p.value), Some(7.5));

    let mut max = six();
    max.direction = Direction::Maximize;
    let h = HistoryPlot::compute(&max).expect("history");
    assert_eq!(h.best_so_far, vec![(0, 5.0), (1, 5.0), (4, 5.0), (5, 5.0)]);
}

#[test]
fn parallel_axes_ranges_and_log_flags() {
    let p = ParallelCoordinates::compute(&six()).expect("parallel");
    assert_eq!((p.value_min, p.value_max), (2.0, 5.0), "only COMPLETE trials");
    assert_eq!(p.lines.len(), 4);
    let names: Vec<&str> = p.axes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["learning_rate", "batch_size", "epochs"]);
    let lr = &p.axes[0];
    assert!(lr.is_log());
    assert_eq!((lr.min, lr.max), (1e-5, 1e-3));
    assert_eq!(p.axes[1].scale, Scale::Categorical(vec!["8".into(), "16".into(), "32".into()]));
    assert!(!p.axes[2].is_log());
    assert_eq!((p.axes[2].min, p.axes[2].max), (2.0, 8.0));
    // Trial 0 has the smallest lr and batch size: both at the bottom; trial 1 (lr 1e-3) at the top.
    let line = |n| p.lines.iter().find(|l| l.number == n).expect("line");
    assert_eq!(line(0).units[..2], [Some(0.0), Some(0.0)]);
    assert_eq!(line(1).units[0], Some(1.0));
    // 1e-4 is halfway between 1e-5 and 1e-3 on a log axis.
    let mid = ParallelCoordinates::compute(&data(
        Direction::Minimize,
        vec![
            trial(0, TrialState::Complete, Some(1.0), params(1e-5, 8, 1)),
            trial(1, TrialState::Complete, Some(2.0), params(1e-3, 8, 1)),
            trial(2, TrialState::Complete, Some(3.0), params(1e-4, 8, 1)),
        ],
    ))
    .expect("parallel");
    assert!((mid.lines[2].units[0].unwrap() - 0.5).abs() < 1e-9);
}

/// A tiny deterministic generator in [0, 1).
fn lcg(state: &mut u64) -> f64 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn importance_ranks_the_dominant_parameter_first_and_sums_to_one() {
    let mut s = 7u64;
    let trials = (0..40)
        .map(|n| {
            let lr = 10f64.powf(-6.0 + 4.0 * lcg(&mut s));
            let bs = [8, 16, 32][(lcg(&mut s) * 3.0) as usize % 3];
            let ep = 1 + (lcg(&mut s) * 10.0) as i64 % 10;
            // The value is driven by the learning rate (log scale); the rest barely matters.
            let v = (lr.log10() + 4.0).powi(2) + 0.01 * ep as f64 + 0.001 * bs as f64;
            trial(n, TrialState::Complete, Some(v), params(lr, bs, ep))
        })
        .collect();
    let imp = ImportancePlot::compute(&data(Direction::Minimize, trials)).expect("importance");
    assert_eq!(imp.items[0].name, "learning_rate");
    let sum: f64 = imp.items.iter().map(|i| i.share).sum();
    assert!((sum - 1.0).abs() < 1e-9, "{sum}");
    assert!(imp.items[0].share > 0.7, "{:?}", imp.items);
    assert!(imp.items.windows(2).all(|w| w[0].share >= w[1].share));
    assert_eq!(imp.trials_used, 40);
    assert!(imp.method.describe().contains("fANOVA"));
}

#[test]
fn importance_of_a_gp_study_comes_from_its_lengthscales() {
    let mut s = 11u64;
    let trials = (0..30)
        .map(|n| {
            let lr = 10f64.powf(-6.0 + 4.0 * lcg(&mut s));
            let bs = [8, 16, 32][(lcg(&mut s) * 3.0) as usize % 3];
            let ep = 1 + (lcg(&mut s) * 10.0) as i64 % 10;
            let v = (lr.log10() + 4.0).powi(2) + 0.01 * ep as f64;
            trial(n, TrialState::Complete, Some(v), params(lr, bs, ep))
        })
        .collect();
    let mut d = data(Direction::Minimize, trials);
    d.sampler_is_gp = true;
    let imp = ImportancePlot::compute(&d).expect("importance");
    assert_eq!(imp.method, super::importance::ImportanceMethod::GpLengthscales);
    assert!(imp.method.describe().contains("GP lengthscales"));
    assert_eq!(imp.items[0].name, "learning_rate", "{:?}", imp.items);
    let sum: f64 = imp.items.iter().map(|i| i.share).sum();
    assert!((sum - 1.0).abs() < 1e-9);
    let svg = Plot::Importance(imp).to_svg("importance").expect("svg");
    assert!(svg.contains("GP lengthscales"));
}

fn timed(n: u64, dev: &str, start: u32, end: Option<u32>, state: TrialState) -> TrialRecord {
    let mut t = trial(n, state, Some(1.0), params(1e-4, 8, 1));
    t.device = Some(dev.into());
    t.started_at = Some(format!("2026-01-01 10:00:{start:02}.000000"));
    t.finished_at = end.map(|e| format!("2026-01-01 10:00:{e:02}.000000"));
    t
}

#[test]
fn timeline_lanes_never_overlap_and_busy_is_the_union() {
    let trials = vec![
        timed(0, "cuda:0", 0, Some(10), TrialState::Complete),
        timed(1, "cuda:0", 5, Some(15), TrialState::Complete),
        timed(2, "cuda:0", 10, Some(20), TrialState::Pruned),
        timed(3, "cuda:1", 0, Some(5), TrialState::Fail),
        timed(4, "cuda:1", 12, None, TrialState::Running),
    ];
    let tl = DeviceTimeline::compute(&data(Direction::Minimize, trials)).expect("timeline");
    assert_eq!(tl.span, 20.0);
    let lanes: Vec<(String, usize)> = tl.lanes.iter().map(|l| (l.device.clone(), l.lane)).collect();
    assert_eq!(lanes, [("cuda:0".into(), 0), ("cuda:0".into(), 1), ("cuda:1".into(), 0)]);
    for (i, a) in tl.bars.iter().enumerate() {
        for b in &tl.bars[i + 1..] {
            if a.lane == b.lane {
                assert!(a.end <= b.start || b.end <= a.start, "bars {} and {} overlap", a.number, b.number);
            }
        }
    }
    let bar = |n| tl.bars.iter().find(|b| b.number == n).expect("bar");
    assert_eq!(bar(2).lane, bar(0).lane, "trial 2 starts when trial 0 ends");
    assert_ne!(bar(1).lane, bar(0).lane);
    assert_eq!((bar(4).start, bar(4).end), (12.0, 20.0), "a running trial reaches the latest time");
    let busy: Vec<(String, f64)> = tl.busy.clone();
    assert_eq!(busy, [("cuda:0".into(), 1.0), ("cuda:1".into(), 0.65)]);
}

#[test]
fn confusion_matrix_cells_labels_and_accuracy() {
    let mut d = six();
    let best = d.trials.iter_mut().find(|t| t.number == 5).expect("trial 5");
    best.metrics.insert("test".into(), json!({"accuracy": 0.8, "confusion_matrix": [[5, 1], [2, 7]], "labels": ["neg", "pos"]}));
    let cm = ConfusionMatrix::compute(&d).expect("confusion");
    assert_eq!(cm.number, 5);
    assert_eq!(cm.cells, vec![vec![5, 1], vec![2, 7]]);
    assert_eq!(cm.labels, ["neg", "pos"]);
    assert!((cm.accuracy().unwrap_or(0.0) - 0.8).abs() < 1e-12);
    let svg = Plot::Confusion(cm).to_svg("confusion").expect("svg");
    let texts = svg_texts(&svg);
    assert!(texts.iter().any(|t| t == "neg") && texts.iter().any(|t| t == "7"), "cell counts and labels are drawn: {texts:?}");

    // Not square: said, not failed.
    let best = d.trials.iter_mut().find(|t| t.number == 5).expect("trial 5");
    best.metrics.insert("test".into(), json!({"confusion_matrix": [[5, 1, 0], [2, 7]]}));
    assert!(ConfusionMatrix::compute(&d).is_err());
    // A regression study's test metrics: the note says why there is none.
    let best = d.trials.iter_mut().find(|t| t.number == 5).expect("trial 5");
    best.metrics.insert("test".into(), json!({"r2": 0.5, "mse": 0.1, "loss": 0.1}));
    let why = ConfusionMatrix::compute(&d).expect_err("no matrix");
    assert!(why.to_string().contains("regression"), "{why}");
    // Nor for multi-label, whose labels are scored one by one.
    let best = d.trials.iter_mut().find(|t| t.number == 5).expect("trial 5");
    best.metrics.insert("test".into(), json!({"hamming_loss": 0.1, "f1_micro": 0.8, "f1_pos": 0.9}));
    let why = ConfusionMatrix::compute(&d).expect_err("no matrix");
    assert!(why.to_string().contains("multi-label"), "{why}");
}

#[test]
fn contour_interpolates_the_data() {
    let c = ContourPlot::compute(&six(), "learning_rate", "epochs").expect("contour");
    assert_eq!((c.xs.len(), c.ys.len(), c.grid.len(), c.grid[0].len()), (GRID, GRID, GRID, GRID));
    assert!(c.method.contains("inverse-distance"));
    assert!(c.x.is_log() && !c.y.is_log());
    assert_eq!(c.points.len(), 4);
    let flat: Vec<f64> = c.grid.iter().flatten().copied().collect();
    assert!(flat.iter().all(|v| (2.0..=5.0).contains(v)), "IDW stays within the observed values");
    // The cell nearest an observation is closest to its value.
    let (px, py, pv) = c.points[0];
    let i = c.xs.iter().enumerate().min_by(|a, b| (a.1 - px).abs().total_cmp(&(b.1 - px).abs())).map(|x| x.0).unwrap_or(0);
    let j = c.ys.iter().enumerate().min_by(|a, b| (a.1 - py).abs().total_cmp(&(b.1 - py).abs())).map(|x| x.0).unwrap_or(0);
    assert!((c.grid[j][i] - pv).abs() < 0.5, "{} vs {pv}", c.grid[j][i]);
    assert!(ContourPlot::compute(&six(), "epochs", "epochs").is_err());
}

#[test]
fn one_trial_is_not_enough_and_says_so() {
    let d = data(Direction::Minimize, vec![trial(0, TrialState::Complete, Some(1.0), params(1e-4, 8, 2))]);
    let set = PlotSet::compute(&d, None).expect("plot set");
    for stem in ["history", "parallel", "slice_learning_rate", "contour", "importance", "learning_curves", "confusion"] {
        let item = set.get(stem).unwrap_or_else(|| panic!("no item {stem}"));
        match &item.plot {
            Err(e) => assert!(e.to_string().starts_with("not enough data: "), "{stem}: {e}"),
            Ok(_) => panic!("{stem} drawn from one trial"),
        }
    }
    // One parameter: importance says so.
    let mut one = six();
    one.params.truncate(1);
    let e = ImportancePlot::compute(&one).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("1 parameter"), "{e}");
    // An unknown contour parameter is an error, not a placeholder.
    assert!(PlotSet::compute(&six(), Some(("learning_rate", "nope"))).is_err());
}

fn curves_data() -> StudyData {
    let mut d = six();
    for t in &mut d.trials {
        let n = t.number as f64;
        t.intermediate = (1..=3).map(|s| (s, 6.0 - s as f64 + n * 0.1)).collect();
    }
    d.best_steps = (1..=3)
        .map(|s| {
            let mut m = Map::new();
            m.insert("train_loss".into(), json!(1.0 / s as f64));
            m.insert("loss".into(), json!(0.5 + 0.1 * s as f64));
            (s, m)
        })
        .collect();
    if let Some(t) = d.trials.iter_mut().find(|t| t.number == 5) {
        t.metrics.insert("fit".into(), json!("overfitting from epoch 2"));
    }
    d
}

#[test]
fn learning_curves_and_train_valid_loss() {
    let d = curves_data();
    let lc = LearningCurves::compute(&d).expect("curves");
    assert_eq!(lc.curves.len(), 6);
    let best: Vec<u64> = lc.curves.iter().filter(|c| c.is_best).map(|c| c.number).collect();
    assert_eq!(best, [5]);
    assert_eq!(lc.curves.iter().find(|c| c.number == 2).map(|c| c.state), Some(TrialState::Pruned));

    let tv = TrainValidLoss::compute(&d).expect("train/valid");
    assert_eq!(tv.number, 5);
    assert_eq!(tv.train.len(), 3);
    assert_eq!(tv.valid[2], (3, 0.8));
    assert_eq!(tv.diagnosis.as_deref(), Some("overfitting from epoch 2"));
    let svg = Plot::TrainValid(tv).to_svg("tv").expect("svg");
    assert!(svg.contains("valid loss") && svg.contains("overfitting from epoch 2"));
    assert!(TrainValidLoss::compute(&six()).is_err(), "no per-epoch metrics: not enough data");
}

#[test]
fn svg_has_labels_and_png_renders_with_the_embedded_font() {
    let d = curves_data();
    let set = PlotSet::compute(&d, None).expect("set");
    let svg = |stem: &str| match &set.get(stem).expect(stem).plot {
        Ok(p) => p.to_svg(stem).expect("svg"),
        Err(e) => panic!("{stem}: {e}"),
    };
    let h = svg("history");
    assert!(h.starts_with("<svg") && h.contains("Optimisation history") && h.contains("best so far") && h.contains("pruned"));
    assert!(svg("parallel").contains("learning_rate (log)"));
    assert!(svg_texts(&svg("slice_batch_size")).iter().any(|t| t == "16"), "choices label the axis");
    assert!(svg("importance").contains("fANOVA"));

    let dir = tempfile::tempdir().expect("tempdir");
    for stem in ["history", "parallel", "importance"] {
        let path = dir.path().join(format!("{stem}.png"));
        match &set.get(stem).expect(stem).plot {
            Ok(p) => p.to_png(stem, &path).expect("png"),
            Err(e) => panic!("{stem}: {e}"),
        }
        let bytes = std::fs::read(&path).expect("read png");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{stem}");
        assert!(bytes.len() > 10_000, "{stem}: {} bytes is too small for a drawn plot", bytes.len());
    }
}

// ----- a real store -----

fn space() -> SearchSpace {
    SearchSpace::new(vec![
        Param { name: "learning_rate".into(), dist: lr_dist() },
        Param { name: "batch_size".into(), dist: bs_dist() },
        Param { name: "epochs".into(), dist: ep_dist() },
    ])
    .expect("space")
}

/// A study of 6 trials: epochs of metrics, test metrics and a fit diagnosis on the complete
/// ones; trial 3 pruned, trial 4 failed.
fn store_fixture(path: &Path) -> (Store, crate::storage::StudyInfo) {
    let mut store = Store::open(path).expect("open");
    let sp = space();
    let text = "[study]\nname = \"s\"\nn_trials = 6\n[sampler]\nkind = \"gp\"\nseed = 3\n";
    let info = store
        .create_or_open_study(&StudySpec {
            name: "s",
            direction: Direction::Minimize,
            metric: "loss",
            space: &sp,
            study_text: text,
            allow_space_change: false,
        })
        .expect("study");
    let pts = [(1e-5, 8, 2), (1e-3, 16, 4), (1e-4, 32, 6), (3e-4, 16, 8), (2e-4, 32, 3), (5e-5, 8, 5)];
    for (k, &(lr, bs, ep)) in pts.iter().enumerate() {
        let claim = store
            .claim_next::<std::convert::Infallible>(
                info.id,
                &sp,
                Budget::default(),
                &Owner::current(),
                &format!("cuda:{}", k % 2),
                |_, _, _| Ok(Some(params(lr, bs, ep))),
            )
            .expect("claim")
            .expect("propose");
        let Claim::Trial(t) = claim else { panic!("no trial") };
        let base = 1.0 + k as f64 * 0.1;
        for step in 1..=3 {
            let mut m = Map::new();
            m.insert("train_loss".into(), json!(base / step as f64));
            m.insert("loss".into(), json!(base - 0.05 * step as f64));
            m.insert("accuracy".into(), json!(0.5 + 0.1 * step as f64));
            store.report_intermediate(t.id, step, base - 0.05 * step as f64, &m).expect("report");
        }
        let outcome = match k {
            3 => Outcome::Pruned { step: 3, value: Some(base - 0.15) },
            4 => Outcome::Failed { reason: "CUDA out of memory <boom>".into() },
            _ => {
                let mut m = Map::new();
                m.insert("fit".into(), json!("good fit"));
                m.insert("accuracy".into(), json!(0.8));
                m.insert("samples_per_s".into(), json!(123.0));
                m.insert("learning_rate".into(), json!(1e-6));
                m.insert("test".into(), json!({"accuracy": 0.75, "confusion_matrix": [[3, 1], [1, 3]]}));
                store.merge_metrics(t.id, &m).expect("metrics");
                Outcome::Complete { value: base - 0.15 }
            }
        };
        store.finish(t.id, &outcome, false).expect("finish");
    }
    (store, info)
}

#[test]
fn study_data_from_a_bare_store_knows_log_scales_sampler_and_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, info) = store_fixture(&dir.path().join("s.db"));
    let d = StudyData::load(&store, &info, None).expect("load");
    assert_eq!(d.params.len(), 3);
    assert_eq!(d.dist("learning_rate"), Some(&lr_dist()));
    assert_eq!(d.sampler.as_deref(), Some("gp (seed 3)"));
    assert!(d.sampler_is_gp);
    assert_eq!(d.n_trials, Some(6));
    assert_eq!(d.metric, "loss");
    assert_eq!(d.best().map(|b| b.number), Some(0));
    assert_eq!(d.best_steps.len(), 3);
}

#[test]
fn the_report_is_self_contained_with_rows_and_inline_plots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, info) = store_fixture(&dir.path().join("s.db"));
    let out = dir.path().join("out").join("report.html");
    let written = super::write_report(&store, &info, None, &out).expect("report");
    assert_eq!(written, out);
    let html = std::fs::read_to_string(&out).expect("read");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out")).expect("dir").filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");

    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    let rows = html.matches("<tr class=\"").count();
    assert_eq!(rows, 6, "one table row per trial");
    assert!(html.contains("<tr class=\"COMPLETE best\"><td class=\"num\">0</td>"));
    assert!(html.contains("CUDA out of memory &lt;boom&gt;"), "errors are shown, escaped");
    assert!(html.contains("<td>good fit</td>"));
    assert!(html.contains("gp (seed 3)") && html.contains("device hours") && html.contains("time used"));
    assert!(html.contains("Test metrics") && html.contains("0.75"));
    // The run's facts apart from what it measured.
    let valid = &html[html.find("Valid metrics").expect("valid")..html.find("Test metrics").expect("test")];
    let run = &html[html.find("<h3>Run</h3>").expect("a Run table")..];
    assert!(valid.contains("accuracy") && !valid.contains("samples_per_s"), "{valid}");
    assert!(run.contains("samples_per_s") && run.contains("learning_rate at the end"), "{run}");
    assert!(!html.contains("Model soup"), "no soup section without a soup");
    let svgs = html.matches("<svg").count();
    assert!(svgs >= 9, "{svgs} inline plots");
    for id in ["history", "parallel", "contour", "importance", "learning_curves", "train_valid_loss", "timeline", "confusion"] {
        let at = html.find(&format!("id=\"plot-{id}\"")).unwrap_or_else(|| panic!("no figure {id}"));
        let rest = &html[at..];
        let end = rest.find("</figure>").unwrap_or(rest.len());
        assert!(rest[..end].contains("<svg"), "{id} is drawn inline");
    }
    assert!(html.contains("GP lengthscales"), "a gp study's importance comes from the GP");
    let external = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!external.contains("http://") && !external.contains("https://"), "no external resources");
    assert!(!external.contains("<script src") && !external.contains("<link"));
    assert!(html.contains("<script>") && html.contains("sortable"));
}

#[test]
fn the_report_renders_in_headless_chromium() {
    let Some(browser) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| std::process::Command::new("which").arg(b).output().map(|o| o.status.success()).unwrap_or(false))
    else {
        eprintln!("skipped: no chromium installed (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, info) = store_fixture(&dir.path().join("s.db"));
    let out = dir.path().join("report.html");
    super::write_report(&store, &info, None, &out).expect("report");
    let shot = dir.path().join("shot.png");
    let status = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2000"])
        .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", out.display()))
        .output()
        .expect("run chromium");
    assert!(shot.is_file(), "no screenshot: {}", String::from_utf8_lossy(&status.stderr));
    let bytes = std::fs::read(&shot).expect("read screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // A blank page compresses to a few kB; a page with tables and plots does not.
    assert!(bytes.len() > 60_000, "screenshot is only {} bytes", bytes.len());
    if let Ok(keep) = std::env::var("SFT_KEEP_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep);
    }

    // The table sorts in the browser: two clicks on the value column sort it descending,
    // trials without a value last.
    let html = std::fs::read_to_string(&out).expect("read report");
    let clicks = "<script>var h=document.querySelectorAll('#trials th')[2];h.click();h.click();</script></body>";
    let sorted = dir.path().join("sorted.html");
    std::fs::write(&sorted, html.replace("</body>", clicks)).expect("write");
    let dom = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
        .arg(format!("file://{}", sorted.display()))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&dom.stdout);
    let order: Vec<String> = dom
        .split("<tr class=\"")
        .skip(1)
        .filter_map(|r| {
            let cell = r.split("<td class=\"num\">").nth(1)?;
            Some(cell[..cell.find('<')?].to_string())
        })
        .collect();
    assert_eq!(order, ["5", "3", "2", "1", "0", "4"], "rows after sorting by value, descending");
}

#[test]
fn plot_and_report_commands_write_their_files() {
    use crate::cli::{ImageFormat, PlotArgs, ReportArgs};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("s.db");
    drop(store_fixture(&db));
    let out = dir.path().join("plots");
    let args = PlotArgs {
        study: db.clone(),
        study_name: None,
        out: Some(out.clone()),
        format: ImageFormat::Png,
        params: Some(vec!["epochs".into(), "batch_size".into()]),
    };
    crate::app::plot::run(&args, true).expect("plot");
    let mut files: Vec<String> =
        std::fs::read_dir(&out).expect("dir").filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect();
    files.sort();
    assert_eq!(
        files,
        [
            "confusion.png",
            "contour.png",
            "history.png",
            "importance.png",
            "learning_curves.png",
            "parallel.png",
            "slice_batch_size.png",
            "slice_epochs.png",
            "slice_learning_rate.png",
            "timeline.png",
            "train_valid_loss.png",
        ]
    );
    for f in &files {
        let bytes = std::fs::read(out.join(f)).expect("read");
        assert_eq!(&bytes[..4], b"\x89PNG", "{f}");
    }
    // SVG into the default folder beside the database.
    let args = PlotArgs { study: db.clone(), study_name: None, out: None, format: ImageFormat::Svg, params: None };
    crate::app::plot::run(&args, true).expect("plot");
    let svg = std::fs::read_to_string(dir.path().join("s-plots").join("contour.svg")).expect("contour.svg");
    assert!(svg.contains("inverse-distance"));
    // A plot that no longer has data loses its old file.
    std::fs::write(dir.path().join("s-plots").join("confusion.svg"), "stale").expect("write");
    let store = Store::open_existing(&db).expect("open");
    let study = store.study("s").expect("study");
    for t in store.trials(study.id).expect("trials") {
        store.merge_metrics(t.id, &Map::from_iter([("test".to_string(), json!({}))])).expect("metrics");
    }
    drop(store);
    let args = PlotArgs { study: db.clone(), study_name: None, out: None, format: ImageFormat::Svg, params: None };
    crate::app::plot::run(&args, true).expect("plot");
    assert!(!dir.path().join("s-plots").join("confusion.svg").exists());
    assert!(dir.path().join("s-plots").join("history.svg").exists());
    // A wrong --params is a usage error.
    let args =
        PlotArgs { study: db.clone(), study_name: None, out: Some(out), format: ImageFormat::Svg, params: Some(vec!["epochs".into()]) };
    let err = crate::app::plot::run(&args, true).err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(err.contains("two parameter names"), "{err}");

    let args = ReportArgs { study: db, study_name: None, out: None };
    crate::app::report::run(&args, true).expect("report");
    let html = std::fs::read_to_string(dir.path().join("s-report.html")).expect("report file");
    assert!(html.contains("<table class=\"sortable\""));
}

#[test]
fn the_budget_line_counts_against_n_trials_or_says_it_was_raised() {
    let mut d = six();
    let mut h = String::new();
    super::html::summary_section(&mut h, &d);
    assert!(h.contains("5 of 10 trials complete or pruned"), "{h}");
    d.n_trials = Some(3);
    let mut h = String::new();
    super::html::summary_section(&mut h, &d);
    assert!(h.contains("5 trials complete or pruned (the study file asks for 3; later runs raised it with --n-trials)"), "{h}");
}
