//! End-to-end tests of `load_dataset` on small files written to a temp folder.

use super::*;
use std::path::PathBuf;

fn write(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn balanced_csv(n: usize) -> String {
    let mut s = String::from("text,label\n");
    for i in 0..n {
        s.push_str(&format!("sentence number {i},{}\n", i % 2));
    }
    s
}

#[test]
fn default_split_is_stratified_and_covers_all_rows() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "d.csv", &balanced_csv(200));
    let ds = load_dataset(&DataSection::new(&p)).unwrap();
    assert_eq!((ds.train.len(), ds.valid.len(), ds.test.len()), (140, 30, 30));
    assert_eq!(ds.class_counts(&ds.valid), vec![15, 15]);
    assert_eq!(ds.labels.id2label, vec!["0", "1"]);
    assert_eq!(ds.num_labels(), 2);
    let mut texts: Vec<&str> = ds.train.iter().chain(&ds.valid).chain(&ds.test).map(|e| e.text.as_str()).collect();
    texts.sort_unstable();
    texts.dedup();
    assert_eq!(texts.len(), 200);
    assert_eq!(ds, load_dataset(&DataSection::new(&p)).unwrap(), "deterministic");
    assert!((ds.chance_level(&ds.train) - 0.5).abs() < 1e-12);
    assert_eq!(ds.balanced_class_weights(), vec![1.0, 1.0]);
}

#[test]
fn test_path_only_splits_train_valid() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "train.csv", &balanced_csv(200));
    let t = write(&dir, "test.tsv", "text\tlabel\nheld out one\t1\nheld out two\t0\n");
    let mut s = DataSection::new(&p);
    s.test_path = Some(t);
    s.split = vec![0.85, 0.15];
    let ds = load_dataset(&s).unwrap();
    assert_eq!((ds.train.len(), ds.valid.len(), ds.test.len()), (170, 30, 2));
    assert_eq!(ds.test[0].text, "held out one");
}

#[test]
fn string_labels_pairs_and_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::new();
    for i in 0..30 {
        let lab = ["entail", "neutral", "contra"][i % 3];
        body.push_str(&format!("{{\"premise\": \"p {i}\", \"hyp\": \"h {i}\", \"y\": \"{lab}\"}}\n"));
    }
    let p = write(&dir, "nli.jsonl", &body);
    let mut s = DataSection::new(&p);
    s.text_column = "premise".into();
    s.text_pair_column = Some("hyp".into());
    s.label_column = "y".into();
    s.split = vec![0.6, 0.4];
    let ds = load_dataset(&s).unwrap();
    assert_eq!(ds.labels.id2label, vec!["contra", "entail", "neutral"]);
    assert_eq!(ds.valid.len(), 12);
    assert!(ds.train.iter().all(|e| e.text_pair.as_deref().is_some_and(|h| h.starts_with("h "))));
}

#[test]
fn label_outside_declared_set_names_file_row_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "bad.csv", "text,label\ngood,pos\nbad,neg\nmeh,neutral\n");
    let mut s = DataSection::new(&p);
    s.labels = Some(vec!["neg".into(), "pos".into()]);
    let e = load_dataset(&s).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::LabelNotInSet { line: 4, row: 3, .. }), "{msg}");
    assert!(msg.contains("bad.csv line 4 (row 3)") && msg.contains("`label`") && msg.contains("`neutral`"), "{msg}");
}

#[test]
fn test_file_label_unseen_in_train_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "train.csv", &balanced_csv(40));
    let t = write(
        &dir,
        "test.csv",
        "text,label
fine,1
odd,2
",
    );
    let mut s = DataSection::new(&p);
    s.test_path = Some(t);
    let msg = load_dataset(&s).unwrap_err().to_string();
    assert!(msg.contains("test.csv line 3 (row 2), column `label`: label `2`") && msg.contains("train.csv"), "{msg}");
    let one = write(
        &dir,
        "one.csv",
        "text,label
a,1
b,1
",
    );
    let msg = load_dataset(&DataSection::new(one)).unwrap_err().to_string();
    assert!(msg.contains("single label"), "{msg}");
}

#[test]
fn missing_label_and_bad_regression_target() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "r.csv", "text,score\na,0.5\nb,\nc,x\n");
    let mut s = DataSection::new(&p);
    s.label_column = "score".into();
    s.problem = Problem::Regression;
    let msg = load_dataset(&s).unwrap_err().to_string();
    assert!(msg.contains("r.csv line 3 (row 2): column `score` has no value"), "{msg}");
    let p = write(&dir, "r2.csv", "text,score\na,0.5\nc,x\n");
    s.path = p;
    let msg = load_dataset(&s).unwrap_err().to_string();
    assert!(msg.contains("r2.csv line 3 (row 2), column `score`") && msg.contains("`x`"), "{msg}");
}

#[test]
fn a_quote_never_closed_is_named_as_the_likely_cause() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "q.csv", "text,label\ngood,1\nbad,0\n\"open quote,1\nok,0\nfine,1\n");
    let msg = load_dataset(&DataSection::new(p)).unwrap_err().to_string();
    assert!(msg.contains("q.csv line 4: row 3 has no `label`") && msg.contains("over 3 lines, to line 6"), "{msg}");
    assert!(msg.contains("never closed"), "{msg}");
}

#[test]
fn regression_loads() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::from("text,score\n");
    for i in 0..40 {
        body.push_str(&format!("row {i},{}\n", i as f32 / 10.0));
    }
    let mut s = DataSection::new(write(&dir, "r.csv", &body));
    s.label_column = "score".into();
    s.problem = Problem::Regression;
    let ds = load_dataset(&s).unwrap();
    assert_eq!(ds.num_labels(), 1);
    assert_eq!(ds.train.len() + ds.valid.len() + ds.test.len(), 40);
    assert!(matches!(ds.train[0].label, Target::Value(_)));
}

#[test]
fn cleaning_report_and_max_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = balanced_csv(100);
    body.push_str("  sentence   number 3 ,1\n\"   \",0\n");
    let p = write(&dir, "c.csv", &body);
    let mut s = DataSection::new(&p);
    s.dedup = true;
    let ds = load_dataset(&s).unwrap();
    let r = &ds.report;
    assert_eq!((r.rows_read, r.trimmed, r.empty_dropped, r.duplicates_dropped, r.rows_kept), (102, 2, 1, 1, 100));
    s.max_rows = Some(50);
    s.dedup = false;
    let ds = load_dataset(&s).unwrap();
    assert_eq!((ds.report.rows_read, ds.report.sampled_out), (102, 52));
    assert_eq!(ds.train.len() + ds.valid.len() + ds.test.len(), ds.report.rows_kept);
}

#[test]
fn quick_start_csv_is_balanced_and_loads() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("studies/data/sentiment.csv");
    let mut s = DataSection::new(&p);
    s.dedup = true;
    let ds = load_dataset(&s).unwrap();
    assert_eq!(ds.report.rows_read, 300);
    assert_eq!((ds.report.duplicates_dropped, ds.report.empty_dropped, ds.report.trimmed), (0, 0, 0));
    // per class: round(150 · 0.15) = 23 valid, 23 test, 104 train
    assert_eq!(ds.class_counts(&ds.train), vec![104, 104]);
    assert_eq!(ds.class_counts(&ds.valid), vec![23, 23]);
    assert_eq!(ds.class_counts(&ds.test), vec![23, 23]);
}

/// Real-data check: `SFT_DATA_DIR=/work/shared/data cargo test --lib -- --ignored sst2`.
#[test]
#[ignore]
fn sst2_protocol_of_the_quality_target() {
    let dir = PathBuf::from(std::env::var("SFT_DATA_DIR").expect("set SFT_DATA_DIR"));
    let mut s = DataSection::new(dir.join("sst2_train5k/data.csv"));
    s.test_path = Some(dir.join("sst2_dev/data.csv"));
    s.split = vec![0.85, 0.15];
    let ds = load_dataset(&s).unwrap();
    assert_eq!(ds.train.len() + ds.valid.len(), ds.report.rows_kept - 872);
    assert_eq!(ds.test.len(), 872);
    assert_eq!(ds.class_counts(&ds.test), vec![428, 444]);
    let v = ds.class_counts(&ds.valid);
    assert_eq!(v, vec![(2242.0f64 * 0.15).round() as usize, (2758.0f64 * 0.15).round() as usize]);
    eprintln!("{}", ds.report);
}

#[test]
fn a_single_label_or_tag_is_refused_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "one.csv", "text,label\na,pos\nb,pos\nc,pos\n");
    let e = load_dataset(&DataSection::new(&p)).unwrap_err().to_string();
    assert!(e.contains("one.csv has a single label (pos); classification needs at least two"), "{e}");
    let p = write(&dir, "o.conll", "a\tO\nb\tO\n\nc\tO\n");
    let mut d = DataSection::new(&p);
    d.problem = Problem::TokenClassification;
    let e = load_dataset(&d).unwrap_err().to_string();
    assert!(e.contains("o.conll has a single tag (O); token classification needs at least two"), "{e}");
}

#[test]
fn token_rows_load_with_tags_in_id_order_and_class_counts_over_words() {
    let dir = tempfile::tempdir().unwrap();
    let mut conll = String::from("-DOCSTART- -X- O\n\n");
    for i in 0..40 {
        conll.push_str(&format!("word{i}\tB-per\nsaid\tO\nhello\tO\n\n"));
    }
    let p = write(&dir, "t.conll", &conll);
    let mut d = DataSection::new(&p);
    d.problem = Problem::TokenClassification;
    let ds = load_dataset(&d).unwrap();
    assert_eq!(ds.labels.id2label, vec!["O", "B-per"]);
    assert_eq!(ds.train.len() + ds.valid.len() + ds.test.len(), 40);
    assert_eq!(ds.train[0].label, Target::Tags(vec![1, 0, 0]));
    assert_eq!(ds.train[0].text.split(' ').count(), 3);
    // Counts and chance are over words: 2 in 3 are O.
    let c = ds.class_counts(&ds.train);
    assert_eq!(c, vec![2 * ds.train.len(), ds.train.len()]);
    assert!((ds.chance_level(&ds.train) - 2.0 / 3.0).abs() < 1e-12);
    // A valid file's tag outside the set is named with its line.
    let v = write(&dir, "v.conll", "a\tO\n\nz\tO\nb\tB-loc\n");
    d.valid_path = Some(v);
    let e = load_dataset(&d).unwrap_err().to_string();
    assert!(e.contains("v.conll line 4 (sentence 2, word 2 `b`): tag `B-loc` is not one of the tags [O, B-per] (the tags of"), "{e}");
}

fn multi(path: PathBuf) -> DataSection {
    let mut s = DataSection::new(path);
    s.problem = Problem::MultiLabelClassification;
    s.label_column = "labels".into();
    s
}

#[test]
fn multi_label_rows_read_separated_cells_json_lists_and_empty_sets() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("text,labels\n");
    for i in 0..40 {
        let cell = ["\"sport, politics\"", "politics", "", "\"[\"\"tech\"\", \"\"sport\"\"]\""][i % 4];
        csv.push_str(&format!("row {i},{cell}\n"));
    }
    let p = write(&dir, "m.csv", &csv);
    let ds = load_dataset(&multi(p.clone())).unwrap();
    assert_eq!(ds.labels.id2label, vec!["politics", "sport", "tech"]);
    assert_eq!(ds.num_labels(), 3);
    let all: Vec<&Example> = ds.train.iter().chain(&ds.valid).chain(&ds.test).collect();
    assert_eq!(all.len(), 40);
    let of = |text: &str| all.iter().find(|e| e.text == text).unwrap().label.clone();
    assert_eq!(of("row 0"), Target::Labels(vec![true, true, false]));
    assert_eq!(of("row 1"), Target::Labels(vec![true, false, false]));
    assert_eq!(of("row 2"), Target::Labels(vec![false; 3]), "an empty cell is a row with no label");
    assert_eq!(of("row 3"), Target::Labels(vec![false, true, true]));
    assert_eq!(of("row 3").label_ids(), vec![1, 2]);
    // Rows per label, the most common set's share, and negatives over positives per label.
    let counts = ds.class_counts(&all.iter().map(|e| (*e).clone()).collect::<Vec<_>>());
    assert_eq!(counts, vec![20, 20, 10]);
    let chance = ds.chance_level(&ds.train);
    assert!(chance > 0.15 && chance < 0.4, "{chance}");
    let n = ds.train.len() as f32;
    let w = ds.balanced_pos_weights();
    let c = ds.class_counts(&ds.train);
    assert!((w[2] - (n - c[2] as f32) / c[2] as f32).abs() < 1e-6, "{w:?}");

    // Another separator; JSON Lines lists (names, or ids into declared labels).
    let p = write(&dir, "m.tsv", "text\tlabels\na\tx|y\nb\ty\nc\t\nd\tx\n");
    let mut s = multi(p);
    s.label_separator = Some("|".into());
    s.split = vec![0.5, 0.5];
    let ds = load_dataset(&s).unwrap();
    assert_eq!(ds.labels.id2label, vec!["x", "y"]);
    let p = write(
        &dir,
        "m.jsonl",
        "{\"text\": \"a\", \"labels\": [1, 0]}\n{\"text\": \"b\", \"labels\": []}\n{\"text\": \"c\", \"labels\": [1]}\n",
    );
    let mut s = multi(p);
    s.labels = Some(vec!["x".into(), "y".into()]);
    s.split = vec![0.5, 0.5];
    let ds = load_dataset(&s).unwrap();
    let all: Vec<&Example> = ds.train.iter().chain(&ds.valid).collect();
    assert_eq!(all.iter().find(|e| e.text == "a").unwrap().label, Target::Labels(vec![true, true]));
    assert_eq!(all.iter().find(|e| e.text == "b").unwrap().label, Target::Labels(vec![false, false]));
}

#[test]
fn multi_label_mistakes_name_the_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let train = write(&dir, "t.csv", "text,labels\na,x\nb,\"x,y\"\nc,y\nd,x\n");
    let valid = write(&dir, "v.csv", "text,labels\ne,x\nf,\"y,zz\"\n");
    let mut s = multi(train.clone());
    s.valid_path = Some(valid);
    let e = load_dataset(&s).unwrap_err().to_string();
    assert!(e.contains("v.csv") && e.contains("line 3") && e.contains("zz") && e.contains("x, y"), "{e}");
    let bad = write(&dir, "b.csv", "text,labels\na,x\nb,\"[\"\"x\"\", \"\"y\"\"\"\n");
    let e = load_dataset(&multi(bad)).unwrap_err().to_string();
    assert!(e.contains("b.csv") && e.contains("line 3") && e.contains("not one"), "{e}");
    let none = write(&dir, "n.csv", "text,labels\na,\nb,\n");
    let e = load_dataset(&multi(none)).unwrap_err().to_string();
    assert!(e.contains("no row of") && e.contains("`labels`"), "{e}");
    let mut s = DataSection::new(train);
    s.label_separator = Some("|".into());
    let e = load_dataset(&s).unwrap_err().to_string();
    assert!(e.contains("label_separator is for problem = \"multi_label_classification\""), "{e}");
}
