//! Token classification scores: entities read from BIO tags and scored as seqeval does in
//! its default mode (the conlleval rules, what Hugging Face's token-classification examples
//! and `evaluate`'s `seqeval` report), plus word accuracy.
//!
//! - An entity is a run of tags of one type: it starts at `B-x` (or `S-x`), or at an `I-x`/`E-x`
//!   that follows `O` or another type, and ends where the next tag cannot continue it. Tags
//!   are `P-type` with a one-letter prefix `P` in `B I E S`, or `O`.
//! - `precision`, `recall`, `f1`: micro averages over entities (an entity counts as found only
//!   when its type, start and end all match); `f1_macro`: the mean F1 over the types that occur
//!   in the true or the predicted entities; `f1_<type>` per type. A ratio with a zero
//!   denominator is 0 (seqeval's `zero_division` default).
//! - `accuracy`: the share of words whose tag is right (`O` included).

use std::collections::{BTreeMap, BTreeSet};

use super::MetricsError;

/// Names a study's `metric` may take, for token classification.
pub const TOKEN_METRICS: [&str; 6] = ["loss", "accuracy", "precision", "recall", "f1", "f1_macro"];

/// One entity: its type and the first and last word (inclusive).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entity {
    pub kind: String,
    pub start: usize,
    pub end: usize,
}

fn split_tag(tag: &str) -> (char, &str) {
    let mut chars = tag.chars();
    let prefix = chars.next().unwrap_or('O');
    let rest = chars.as_str();
    let kind = rest.split_once('-').map_or(rest, |(_, k)| k);
    (prefix, if kind.is_empty() { "_" } else { kind })
}

fn ends_chunk(prev: char, tag: char, prev_kind: &str, kind: &str) -> bool {
    matches!(prev, 'E' | 'S')
        || (matches!(prev, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev != 'O' && prev != '.' && prev_kind != kind)
}

fn starts_chunk(prev: char, tag: char, prev_kind: &str, kind: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_kind != kind)
}

/// The entities of one sentence's tags (module doc for the rules).
pub fn entities<S: AsRef<str>>(tags: &[S]) -> Vec<Entity> {
    let mut out = Vec::new();
    let (mut prev, mut prev_kind, mut begin) = ('O', "_".to_string(), 0usize);
    for (i, tag) in tags.iter().map(AsRef::as_ref).chain(std::iter::once("O")).enumerate() {
        let (p, kind) = split_tag(tag);
        if ends_chunk(prev, p, &prev_kind, kind) {
            out.push(Entity { kind: prev_kind.clone(), start: begin, end: i - 1 });
        }
        if starts_chunk(prev, p, &prev_kind, kind) {
            begin = i;
        }
        prev = p;
        prev_kind = kind.to_string();
    }
    out
}

/// The scores of predicted against true tags, sentence by sentence (tag ids into `names`).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenScores {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub f1_macro: f64,
    /// Per entity type: (precision, recall, F1, true entities).
    pub per_type: BTreeMap<String, (f64, f64, f64, usize)>,
    /// True and predicted entities counted.
    pub true_entities: usize,
    pub predicted_entities: usize,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn f1_of(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// Scores `pred` against `gold` (one tag-id list per sentence, equal lengths).
pub fn token_scores(gold: &[Vec<u32>], pred: &[Vec<u32>], names: &[String]) -> Result<TokenScores, MetricsError> {
    if gold.len() != pred.len() {
        return Err(MetricsError::Length { what: "predicted sentences", expected: gold.len(), got: pred.len() });
    }
    let name = |id: u32| -> Result<&str, MetricsError> {
        names.get(id as usize).map(String::as_str).ok_or(MetricsError::LabelOutOfRange { label: id, classes: names.len() })
    };
    let (mut words, mut right) = (0usize, 0usize);
    let mut true_by: BTreeMap<String, usize> = BTreeMap::new();
    let mut pred_by: BTreeMap<String, usize> = BTreeMap::new();
    let mut hit_by: BTreeMap<String, usize> = BTreeMap::new();
    for (g, p) in gold.iter().zip(pred) {
        if g.len() != p.len() {
            return Err(MetricsError::Length { what: "predicted tags of a sentence", expected: g.len(), got: p.len() });
        }
        words += g.len();
        right += g.iter().zip(p).filter(|(a, b)| a == b).count();
        let gt: Vec<&str> = g.iter().map(|&t| name(t)).collect::<Result<_, _>>()?;
        let pt: Vec<&str> = p.iter().map(|&t| name(t)).collect::<Result<_, _>>()?;
        let ge: BTreeSet<Entity> = entities(&gt).into_iter().collect();
        let pe: BTreeSet<Entity> = entities(&pt).into_iter().collect();
        for e in &ge {
            *true_by.entry(e.kind.clone()).or_default() += 1;
        }
        for e in &pe {
            *pred_by.entry(e.kind.clone()).or_default() += 1;
            if ge.contains(e) {
                *hit_by.entry(e.kind.clone()).or_default() += 1;
            }
        }
    }
    if words == 0 {
        return Err(MetricsError::Empty);
    }
    let sum = |m: &BTreeMap<String, usize>| m.values().sum::<usize>();
    let (t, p, h) = (sum(&true_by), sum(&pred_by), sum(&hit_by));
    let (precision, recall) = (ratio(h, p), ratio(h, t));
    let kinds: BTreeSet<&String> = true_by.keys().chain(pred_by.keys()).collect();
    let per_type: BTreeMap<String, (f64, f64, f64, usize)> = kinds
        .into_iter()
        .map(|k| {
            let get = |m: &BTreeMap<String, usize>| m.get(k).copied().unwrap_or(0);
            let (pk, rk) = (ratio(get(&hit_by), get(&pred_by)), ratio(get(&hit_by), get(&true_by)));
            (k.clone(), (pk, rk, f1_of(pk, rk), get(&true_by)))
        })
        .collect();
    let f1_macro = if per_type.is_empty() { 0.0 } else { per_type.values().map(|v| v.2).sum::<f64>() / per_type.len() as f64 };
    Ok(TokenScores {
        accuracy: ratio(right, words),
        precision,
        recall,
        f1: f1_of(precision, recall),
        f1_macro,
        per_type,
        true_entities: t,
        predicted_entities: p,
    })
}

impl TokenScores {
    /// The flat metric map (`loss` added by the caller): `accuracy, precision, recall, f1,
    /// f1_macro` and `f1_<type>` per entity type.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        m.insert("accuracy".to_string(), self.accuracy);
        m.insert("precision".to_string(), self.precision);
        m.insert("recall".to_string(), self.recall);
        m.insert("f1".to_string(), self.f1);
        m.insert("f1_macro".to_string(), self.f1_macro);
        for (k, v) in &self.per_type {
            m.entry(format!("f1_{k}")).or_insert(v.2);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(kind: &str, start: usize, end: usize) -> Entity {
        Entity { kind: kind.into(), start, end }
    }

    #[test]
    fn entities_follow_the_conlleval_rules() {
        // seqeval's own example: get_entities(['B-PER', 'I-PER', 'O', 'B-LOC'])
        assert_eq!(entities(&["B-PER", "I-PER", "O", "B-LOC"]), vec![e("PER", 0, 1), e("LOC", 3, 3)]);
        // An I- after O starts an entity; a type change ends one.
        assert_eq!(entities(&["O", "I-PER", "I-PER", "I-LOC", "B-LOC", "I-LOC"]), vec![e("PER", 1, 2), e("LOC", 3, 3), e("LOC", 4, 5)]);
        // B after B: two entities; the last runs to the end.
        assert_eq!(entities(&["B-ORG", "B-ORG", "I-ORG"]), vec![e("ORG", 0, 0), e("ORG", 1, 2)]);
        // IOBES
        assert_eq!(entities(&["S-PER", "B-LOC", "E-LOC", "O"]), vec![e("PER", 0, 0), e("LOC", 1, 2)]);
        assert!(entities(&["O", "O"]).is_empty());
        // Hyphenated types keep their hyphens (WNUT17's creative-work).
        assert_eq!(entities(&["B-creative-work", "I-creative-work"]), vec![e("creative-work", 0, 1)]);
    }

    #[test]
    fn scores_match_seqeval_by_hand() {
        let names: Vec<String> = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"].iter().map(|s| s.to_string()).collect();
        // Sentence 1: PER(0-1) LOC(3); predicted PER(0-1) only, LOC missed.
        // Sentence 2: LOC(0-1); predicted LOC(0) (wrong end) and PER(2) (spurious).
        let gold = vec![vec![1, 2, 0, 3], vec![3, 4, 0]];
        let pred = vec![vec![1, 2, 0, 0], vec![3, 0, 1]];
        let s = token_scores(&gold, &pred, &names).unwrap();
        // true 3, predicted 3, found 1: P = R = F1 = 1/3
        assert_eq!((s.true_entities, s.predicted_entities), (3, 3));
        assert!((s.precision - 1.0 / 3.0).abs() < 1e-12 && (s.recall - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.f1 - 1.0 / 3.0).abs() < 1e-12);
        // PER: P 1/2, R 1/1 → 2/3; LOC: P 0/1, R 0/2 → 0; macro 1/3
        assert!((s.per_type["PER"].2 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.per_type["LOC"], (0.0, 0.0, 0.0, 2));
        assert!((s.f1_macro - 1.0 / 3.0).abs() < 1e-12);
        // words: 7, right: B-PER I-PER O | B-LOC → 4
        assert!((s.accuracy - 4.0 / 7.0).abs() < 1e-12);
        assert_eq!(s.to_map()["f1_PER"], s.per_type["PER"].2);
    }

    #[test]
    fn no_entities_anywhere_scores_zero_not_nan() {
        let names: Vec<String> = ["O", "B-X"].iter().map(|s| s.to_string()).collect();
        let s = token_scores(&[vec![0, 0]], &[vec![0, 0]], &names).unwrap();
        assert_eq!((s.precision, s.recall, s.f1, s.f1_macro, s.accuracy), (0.0, 0.0, 0.0, 0.0, 1.0));
        assert!(token_scores(&[vec![0]], &[vec![0, 0]], &names).is_err());
        assert!(token_scores(&[vec![7]], &[vec![0]], &names).is_err());
    }
}
