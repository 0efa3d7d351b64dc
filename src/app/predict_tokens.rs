//! `sft-search predict` with a token-classification folder (`…ForTokenClassification`, e.g.
//! an export of a `problem = "token_classification"` study): tags every word of a CoNLL file
//! (`.conll`/`.iob`/`.bio`: a word per line, optionally its true tag in the last field) or a
//! JSON Lines file (a list of words per line, optionally a list of true tags). Writes CoNLL
//! (`word [true tag] predicted tag`) or the JSON objects with `predicted_tags` added; scores
//! the predictions against the true tags when the input has them (entity precision, recall
//! and F1 as seqeval computes them).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Map, Value};

use super::common::{metrics_summary, shown};
use super::UsageError;
use crate::cli::PredictArgs;
use crate::export::predict::{argmax, Predictor};
use crate::export::PROVENANCE;
use crate::trainer::data::read::{conll_sentences, json_text_list, utf8_text};
use crate::trainer::data::LabelMap;
use crate::trainer::metrics::token_scores;
use crate::trainer::train::parse_device;

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(UsageError(e.to_string()))
}

/// Whether `dir/config.json` names a token-classification class (`…ForTokenClassification`).
pub fn is_token_model(dir: &Path) -> bool {
    crate::export::hf::read_json_object(&dir.join("config.json")).is_ok_and(|c| crate::export::hf::is_token_classifier(&c))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Conll,
    Jsonl,
}

fn kind_of(path: &Path) -> anyhow::Result<Kind> {
    let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "conll" | "iob" | "bio" => Ok(Kind::Conll),
        "jsonl" | "ndjson" => Ok(Kind::Jsonl),
        _ => Err(usage(format!(
            "{}: a token-classification model reads and writes CoNLL (.conll, .iob, .bio) or JSON Lines (.jsonl)",
            shown(path)
        ))),
    }
}

/// One sentence of the input.
struct Sentence {
    /// 1-based line where it starts.
    line: u64,
    words: Vec<String>,
    /// The true tags, when the input has them (as written: names, or ids in JSON Lines).
    tags: Option<Vec<String>>,
    /// JSON Lines: the whole object, written back with the predictions.
    object: Option<Map<String, Value>>,
}

fn read_conll(path: &Path, text: &str) -> anyhow::Result<Vec<Sentence>> {
    conll_sentences(text)
        .into_iter()
        .map(|lines| {
            let start = lines[0].0;
            let tagged = lines[0].1.len() > 1;
            let mut s = Sentence { line: start, words: Vec::new(), tags: tagged.then(Vec::new), object: None };
            for (line, fields) in lines {
                match (&mut s.tags, fields.len() > 1) {
                    (Some(tags), true) => tags.push(fields[fields.len() - 1].to_string()),
                    (None, false) => {}
                    _ => {
                        return Err(usage(format!(
                            "{} line {line}: some words of the sentence at line {start} have a tag and others do not",
                            shown(path)
                        )))
                    }
                }
                s.words.push(fields[0].to_string());
            }
            Ok(s)
        })
        .collect()
}

fn read_jsonl(path: &Path, text: &str, words_key: &str, tags_key: Option<&str>) -> anyhow::Result<Vec<Sentence>> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = i as u64 + 1;
        if l.trim().is_empty() {
            continue;
        }
        let at = |m: String| usage(format!("{} line {line}: {m}", shown(path)));
        let v: Value = serde_json::from_str(l).map_err(|e| at(e.to_string()))?;
        let Value::Object(obj) = v else { return Err(at("expected a JSON object per line".into())) };
        let list = |key: &str| obj.get(key).map(|v| json_text_list(v, key).map_err(at)).transpose();
        let words = list(words_key)?.ok_or_else(|| {
            at(format!("no `{words_key}` (keys: {}); give --text-column", obj.keys().cloned().collect::<Vec<_>>().join(", ")))
        })?;
        let tags = match tags_key {
            Some(k) => list(k)?,
            None => None,
        };
        if let Some(t) = &tags {
            if t.len() != words.len() {
                return Err(at(format!("{} words but {} tags", words.len(), t.len())));
            }
        }
        if let Some(w) = words.iter().position(|w| w.is_empty() || w.chars().any(char::is_whitespace)) {
            return Err(at(format!("word {} ({:?}) is empty or holds whitespace (one word per entry)", w + 1, words[w])));
        }
        out.push(Sentence { line, words, tags, object: Some(obj) });
    }
    Ok(out)
}

/// The words and tags keys a model was trained on (its `sft_search.json`).
fn trained_keys(model: &Path) -> (Option<String>, Option<String>) {
    let v = crate::export::hf::read_json_object(&model.join(PROVENANCE)).ok();
    let get = |k: &str| v.as_ref().and_then(|v| v.get(k)).and_then(Value::as_str).map(str::to_string);
    (get("text_column"), get("label_column"))
}

pub fn run(args: &PredictArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    if args.batch_size == 0 {
        return Err(usage("--batch-size must be at least 1"));
    }
    if args.text_pair_column.is_some() {
        return Err(usage("--text-pair-column is for sentence pairs; a token-classification model tags the words of one text"));
    }
    let kind = kind_of(&args.input)?;
    let out_kind = match &args.output {
        Some(p) => kind_of(p)?,
        None => kind,
    };
    let bytes = std::fs::read(&args.input).with_context(|| format!("reading {}", shown(&args.input)))?;
    let text = utf8_text(&args.input, &bytes).map_err(usage)?;
    let (trained_words, trained_tags) = trained_keys(&args.model);
    let sentences = match kind {
        Kind::Conll => read_conll(&args.input, text)?,
        Kind::Jsonl => {
            // Given keys, else the ones the model was trained on when the file has them (a
            // study on CoNLL files records the default `text`/`label`), else the Hugging Face
            // names `tokens` and `ner_tags`.
            let first: Map<String, Value> =
                text.lines().find(|l| !l.trim().is_empty()).and_then(|l| serde_json::from_str(l).ok()).unwrap_or_default();
            let pick = |given: &Option<String>, trained: Option<String>, hf: &str| {
                given.clone().or(trained.filter(|k| first.contains_key(k))).unwrap_or_else(|| hf.to_string())
            };
            let words = pick(&args.text_column, trained_words, "tokens");
            let tags = pick(&args.label_column, trained_tags, "ner_tags");
            read_jsonl(&args.input, text, &words, Some(&tags))?
        }
    };
    if sentences.is_empty() {
        return Err(usage(format!("{} has no sentences", shown(&args.input))));
    }
    let has_tags = sentences.iter().any(|s| s.tags.is_some());
    if args.metrics.is_some() && !has_tags {
        return Err(usage(format!("--metrics needs true tags, and {} has none", shown(&args.input))));
    }

    let device = parse_device(&args.device).map_err(usage)?;
    let predictor = Predictor::load(&args.model, &device, args.max_length)
        .with_context(|| format!("loading the model folder {}", shown(&args.model)))?;
    let names = predictor.head().labels.clone();
    let words: Vec<Vec<String>> = sentences.iter().map(|s| s.words.clone()).collect();
    let pb = super::predict::progress_bar(quiet, words.len(), "tagging", "sentences");
    let logits = predictor.word_logits(&words, args.batch_size, &mut |done| pb.set_position(done as u64));
    pb.finish_and_clear();
    let logits = logits.context("running the model")?;

    // A word the model did not see (cut by the length limit) is tagged O.
    let outside = names.iter().position(|n| n == "O").unwrap_or(0) as u32;
    let mut cut = 0usize;
    let predicted: Vec<Vec<u32>> = logits
        .iter()
        .map(|s| {
            s.iter()
                .map(|l| match l {
                    Some(l) => argmax(l) as u32,
                    None => {
                        cut += 1;
                        outside
                    }
                })
                .collect()
        })
        .collect();
    let total_words: usize = words.iter().map(Vec::len).sum();
    if cut > 0 && !quiet {
        eprintln!(
            "warning: {cut} of {total_words} words of {} are beyond the {} tokens the model reads (or vanish in its tokenizer) and are \
             tagged `{}`; --max-length reads more",
            shown(&args.input),
            predictor.max_length(),
            names.get(outside as usize).map_or("", String::as_str)
        );
    }
    let name = |id: u32| names.get(id as usize).cloned().unwrap_or_default();

    // Write the output (a temporary file renamed into place, or stdout).
    let mut body = String::new();
    for (row, (s, pred)) in sentences.iter().zip(&predicted).enumerate() {
        match out_kind {
            Kind::Conll => {
                for (i, w) in s.words.iter().enumerate() {
                    body.push_str(w);
                    if let Some(t) = s.tags.as_ref().and_then(|t| t.get(i)) {
                        body.push('\t');
                        body.push_str(t);
                    }
                    body.push('\t');
                    body.push_str(&name(pred[i]));
                    body.push('\n');
                }
                body.push('\n');
            }
            Kind::Jsonl => {
                let mut obj = s.object.clone().unwrap_or_else(|| {
                    let mut m = Map::new();
                    m.insert("tokens".into(), Value::from(s.words.clone()));
                    if let Some(t) = &s.tags {
                        m.insert("tags".into(), Value::from(t.clone()));
                    }
                    m
                });
                obj.insert("predicted_tags".into(), Value::from(pred.iter().map(|&p| name(p)).collect::<Vec<_>>()));
                if args.logits {
                    // Each word's first-token logits (null for a word the model did not see).
                    let l: Vec<Value> = logits[row]
                        .iter()
                        .map(|l| l.as_ref().map_or(Value::Null, |l| Value::from(l.iter().map(|&x| num(x as f64)).collect::<Vec<_>>())))
                        .collect();
                    obj.insert("logits".into(), Value::Array(l));
                }
                body.push_str(&serde_json::to_string(&Value::Object(obj)).unwrap_or_default());
                body.push('\n');
            }
        }
    }
    match &args.output {
        Some(out) => {
            let file_name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let tmp = out.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
            std::fs::write(&tmp, &body).and_then(|_| std::fs::rename(&tmp, out)).with_context(|| {
                let _ = std::fs::remove_file(&tmp);
                format!("writing {}", out.display())
            })?;
            if !quiet {
                eprintln!("wrote the tags of {} sentences ({total_words} words) to {}", sentences.len(), shown(out));
            }
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(body.as_bytes()).and_then(|_| stdout.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.context("writing to stdout")?,
            }
        }
    }

    if has_tags {
        let map = LabelMap::from_names(names.clone());
        let (mut gold, mut pred) = (Vec::new(), Vec::new());
        let mut unknown: Vec<String> = Vec::new();
        for (s, p) in sentences.iter().zip(&predicted) {
            let Some(tags) = &s.tags else { continue };
            let ids: Option<Vec<u32>> = tags.iter().map(|t| map.tag_id(t, true)).collect();
            match ids {
                Some(ids) => {
                    gold.push(ids);
                    pred.push(p.clone());
                }
                None => unknown.push(format!("line {}", s.line)),
            }
        }
        if !unknown.is_empty() && !quiet {
            let more = if unknown.len() > 5 { ", …" } else { "" };
            eprintln!(
                "warning: {} sentences have a tag the model does not know ({}{more}; it knows {}); they are not scored",
                unknown.len(),
                unknown.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                names.join(", ")
            );
        }
        if gold.is_empty() {
            if args.metrics.is_some() {
                return Err(anyhow::anyhow!("no sentence of {} has only tags the model knows: nothing to score", shown(&args.input)));
            }
            return Ok(ExitCode::SUCCESS);
        }
        let scores = token_scores(&gold, &pred, &names).context("scoring the tags")?;
        let mut m: Map<String, Value> = scores.to_map().into_iter().map(|(k, v)| (k, num(v))).collect();
        let scored_words: usize = gold.iter().map(Vec::len).sum();
        if !quiet {
            eprintln!(
                "scored against the true tags ({} of {} sentences, {scored_words} words, {} entities): {}",
                gold.len(),
                sentences.len(),
                scores.true_entities,
                metrics_summary(&m, "f1")
            );
            for (kind, (p, r, f1, support)) in &scores.per_type {
                eprintln!("  {kind:<20} precision {p:.4}  recall {r:.4}  f1 {f1:.4}  ({support} entities)");
            }
        }
        if let Some(path) = &args.metrics {
            m.insert("sentences_scored".into(), Value::from(gold.len()));
            m.insert("sentences_not_scored".into(), Value::from(sentences.len() - gold.len()));
            m.insert("words_scored".into(), Value::from(scored_words));
            m.insert("true_entities".into(), Value::from(scores.true_entities));
            m.insert("predicted_entities".into(), Value::from(scores.predicted_entities));
            m.insert(
                "per_type".into(),
                Value::Object(
                    scores
                        .per_type
                        .iter()
                        .map(|(k, (p, r, f1, n))| {
                            (k.clone(), serde_json::json!({"precision": num(*p), "recall": num(*r), "f1": num(*f1), "support": n}))
                        })
                        .collect(),
                ),
            );
            let text = serde_json::to_string_pretty(&Value::Object(m)).unwrap_or_default() + "\n";
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn num(x: f64) -> Value {
    serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conll_with_and_without_tags() {
        let p = Path::new("x.conll");
        let s = read_conll(p, "-DOCSTART- O\n\nJohn\tB-per\nlives\tO\n\nParis B-loc\n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].words, vec!["John", "lives"]);
        assert_eq!(s[0].tags, Some(vec!["B-per".to_string(), "O".into()]));
        assert_eq!((s[1].line, s[1].tags.clone()), (6, Some(vec!["B-loc".to_string()])));
        let s = read_conll(p, "John\nlives\n").unwrap();
        assert_eq!((s[0].words.len(), s[0].tags.clone()), (2, None));
        let e = read_conll(p, "John\tB-per\nlives\n").err().unwrap().to_string();
        assert!(e.contains("line 2") && e.contains("some words"), "{e}");
    }

    #[test]
    fn jsonl_reads_words_and_optional_tags() {
        let p = Path::new("x.jsonl");
        let s = read_jsonl(p, "{\"tokens\": [\"a\", \"b\"], \"ner_tags\": [0, 1]}\n{\"tokens\": [\"c\"]}\n", "tokens", Some("ner_tags"))
            .unwrap();
        assert_eq!(s[0].tags, Some(vec!["0".to_string(), "1".into()]));
        assert_eq!(s[1].tags, None);
        let e = read_jsonl(p, "{\"tokens\": [\"a\"], \"ner_tags\": [0, 1]}\n", "tokens", Some("ner_tags")).err().unwrap().to_string();
        assert!(e.contains("line 1") && e.contains("1 words but 2 tags"), "{e}");
        let e = read_jsonl(p, "{\"words\": [\"a\"]}\n", "tokens", None).err().unwrap().to_string();
        assert!(e.contains("no `tokens`") && e.contains("words"), "{e}");
    }
}
