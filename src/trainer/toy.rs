//! A separable toy task for tests: a CSV of short sentences whose label is decided by one
//! sentiment word among neutral filler, and a tiny random BERT (`trainer::tiny`) whose
//! tokenizer is trained on those sentences. Written into a folder in well under a second.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::model::arch::Arch;
use super::tiny::write_tiny_model;

const POSITIVE: &[&str] = &["good", "great", "lovely", "superb", "nice"];
const NEGATIVE: &[&str] = &["bad", "awful", "boring", "poor", "dull"];
const FILLER: &[&str] = &["the", "movie", "film", "was", "really", "quite", "plot", "story", "acting", "and", "it", "a"];

/// Where the toy files are.
#[derive(Debug, Clone)]
pub struct ToyTask {
    pub model_dir: PathBuf,
    pub csv: PathBuf,
}

/// Writes `dir/model/` (tiny BERT, 2 layers, hidden 32) and `dir/data.csv` with `rows`
/// balanced rows (`text,label`, labels `neg`/`pos`).
pub fn write_toy_task(dir: &Path, rows: usize, seed: u64) -> anyhow::Result<ToyTask> {
    write_toy_task_for(dir, rows, seed, Arch::Bert)
}

/// [`write_toy_task`] with a tiny model of another family (RoBERTa, DistilBERT, ELECTRA).
pub fn write_toy_task_for(dir: &Path, rows: usize, seed: u64, arch: Arch) -> anyhow::Result<ToyTask> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut texts = Vec::with_capacity(rows);
    let mut csv = String::from("text,label\n");
    for i in 0..rows {
        let pos = i % 2 == 0;
        let words = if pos { POSITIVE } else { NEGATIVE };
        let n = rng.random_range(3..8);
        let at = rng.random_range(0..=n);
        let mut s = Vec::with_capacity(n + 1);
        for j in 0..=n {
            if j == at {
                s.push(words[rng.random_range(0..words.len())]);
            } else {
                s.push(FILLER[rng.random_range(0..FILLER.len())]);
            }
        }
        let text = s.join(" ");
        writeln!(csv, "{text},{}", if pos { "pos" } else { "neg" })?;
        texts.push(text);
    }
    std::fs::create_dir_all(dir)?;
    let csv_path = dir.join("data.csv");
    std::fs::write(&csv_path, csv)?;
    let model_dir = dir.join("model");
    write_tiny_model(&model_dir, arch, &texts, 2, 32, seed)?;
    Ok(ToyTask { model_dir, csv: csv_path })
}

const PEOPLE: &[&str] = &["alice", "bob", "carol", "dave", "erin", "frank"];
const SURNAMES: &[&str] = &["smith", "jones", "brown"];
const PLACES: &[&str] = &["paris", "london", "rome", "berlin", "madrid"];

/// A toy named-entity task: its tiny model and its CoNLL file.
#[derive(Debug, Clone)]
pub struct ToyNerTask {
    pub model_dir: PathBuf,
    pub conll: PathBuf,
}

/// Writes `dir/model/` (tiny BERT) and `dir/data.conll`: `sentences` sentences of filler
/// words with a person (one or two words: `B-per I-per`) and, in every other sentence, a
/// place (`B-loc`), each recognisable by the word itself.
pub fn write_toy_ner_task(dir: &Path, sentences: usize, seed: u64) -> anyhow::Result<ToyNerTask> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut texts = Vec::with_capacity(sentences);
    let mut conll = String::new();
    for i in 0..sentences {
        let mut words: Vec<(&str, &str)> = Vec::new();
        let n = rng.random_range(2..6);
        for _ in 0..n {
            words.push((FILLER[rng.random_range(0..FILLER.len())], "O"));
        }
        let mut person = vec![(PEOPLE[rng.random_range(0..PEOPLE.len())], "B-per")];
        if rng.random_bool(0.5) {
            person.push((SURNAMES[rng.random_range(0..SURNAMES.len())], "I-per"));
        }
        let at = rng.random_range(0..=words.len());
        words.splice(at..at, person);
        if i % 2 == 0 {
            let at = rng.random_range(0..=words.len());
            // Not inside the person: put the place before a B- or O word, or at the end.
            let at = (at..=words.len()).find(|&k| k == words.len() || words[k].1 != "I-per").unwrap_or(words.len());
            words.insert(at, (PLACES[rng.random_range(0..PLACES.len())], "B-loc"));
        }
        for (w, t) in &words {
            writeln!(conll, "{w}\t{t}")?;
        }
        conll.push('\n');
        texts.push(words.iter().map(|(w, _)| *w).collect::<Vec<_>>().join(" "));
    }
    std::fs::create_dir_all(dir)?;
    let path = dir.join("data.conll");
    std::fs::write(&path, conll)?;
    let model_dir = dir.join("model");
    write_tiny_model(&model_dir, Arch::Bert, &texts, 2, 32, seed)?;
    Ok(ToyNerTask { model_dir, conll: path })
}

/// Writes `dir/model/` (tiny BERT, 2 layers, hidden 64: at hidden 32 it learns one label of
/// the three and stalls there, as the same model does in PyTorch) and `dir/data.csv`: `rows`
/// rows of filler words
/// (`text,labels`) where each of three labels is present with probability ½ and is told by a
/// word of its own — `pos` (a positive word), `neg` (a negative word), `place` (a city) — so a
/// row has none, one, two or all three. The labels of a row are joined by `,` in one quoted
/// cell (`"neg,place"`; empty for none).
pub fn write_toy_multilabel_task(dir: &Path, rows: usize, seed: u64) -> anyhow::Result<ToyTask> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut texts = Vec::with_capacity(rows);
    let mut csv = String::from("text,labels\n");
    let cues: [(&str, &[&str]); 3] = [("neg", NEGATIVE), ("place", PLACES), ("pos", POSITIVE)];
    for _ in 0..rows {
        let n = rng.random_range(1..4);
        let mut words: Vec<&str> = (0..n).map(|_| FILLER[rng.random_range(0..FILLER.len())]).collect();
        let mut labels = Vec::new();
        for (name, pool) in cues {
            if rng.random_bool(0.5) {
                let at = rng.random_range(0..=words.len());
                words.insert(at, pool[rng.random_range(0..pool.len())]);
                labels.push(name);
            }
        }
        let text = words.join(" ");
        writeln!(csv, "{text},\"{}\"", labels.join(","))?;
        texts.push(text);
    }
    std::fs::create_dir_all(dir)?;
    let csv_path = dir.join("data.csv");
    std::fs::write(&csv_path, csv)?;
    let model_dir = dir.join("model");
    write_tiny_model(&model_dir, Arch::Bert, &texts, 2, 64, seed)?;
    Ok(ToyTask { model_dir, csv: csv_path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_writes_the_same_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_toy_task(&dir.path().join("a"), 120, 7).unwrap();
        let b = write_toy_task(&dir.path().join("b"), 120, 7).unwrap();
        for f in ["vocab.txt", "tokenizer.json", "config.json", "model.safetensors"] {
            let (x, y) = (std::fs::read(a.model_dir.join(f)).unwrap(), std::fs::read(b.model_dir.join(f)).unwrap());
            assert!(x == y, "{f} differs between two toy tasks of one seed");
        }
        assert_eq!(std::fs::read(&a.csv).unwrap(), std::fs::read(&b.csv).unwrap());
    }
}
