//! The label mapping: label text ↔ class id, recorded with the study.
//!
//! With declared `labels`, ids are positions in that list and any other label is refused.
//! Otherwise the mapping is built from the distinct labels of the main file (labels of the
//! valid/test files outside it are refused: no model could learn them): if they are exactly
//! the integers `0..k-1`, each keeps its own value as id; else they are sorted (numerically
//! when all are integers, as text otherwise) and numbered in that order.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// Class ids and their names; `id2label[id]` is the label text. Serialises as
/// `{"id2label": [...]}`; the lookup index is rebuilt on deserialisation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "LabelMapRepr")]
pub struct LabelMap {
    pub id2label: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

#[derive(Deserialize)]
struct LabelMapRepr {
    id2label: Vec<String>,
}

impl From<LabelMapRepr> for LabelMap {
    fn from(r: LabelMapRepr) -> Self {
        LabelMap::from_names(r.id2label)
    }
}

impl LabelMap {
    /// A map from an explicit order.
    pub fn from_names(names: Vec<String>) -> Self {
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i as u32)).collect();
        LabelMap { id2label: names, index }
    }

    /// Builds the mapping from the distinct labels seen (module doc for the rule).
    pub fn infer<'a>(labels: impl IntoIterator<Item = &'a str>) -> Self {
        let distinct: BTreeSet<&str> = labels.into_iter().map(str::trim).collect();
        let ints: Option<Vec<i64>> = distinct.iter().map(|s| s.parse::<i64>().ok()).collect();
        let names = match ints {
            Some(mut ints) => {
                ints.sort_unstable();
                ints.dedup();
                let k = ints.len() as i64;
                if ints.iter().enumerate().all(|(i, &v)| v == i as i64) && k > 0 {
                    (0..k).map(|i| i.to_string()).collect()
                } else {
                    // Keep each label's own spelling ("01" stays "01"), ordered by value.
                    let mut v: Vec<&str> = distinct.iter().copied().collect();
                    v.sort_by_key(|s| s.parse::<i64>().unwrap_or(i64::MAX));
                    v.into_iter().map(String::from).collect()
                }
            }
            None => distinct.iter().map(|s| s.to_string()).collect(),
        };
        Self::from_names(names)
    }

    /// The class id of a label text (compared after trimming; integer spellings like `1`
    /// and `1.0` are not merged).
    pub fn id(&self, label: &str) -> Option<u32> {
        let l = label.trim();
        self.index.get(l).copied().or_else(|| {
            // "1" and "01" name the same class when the labels are integers.
            let v = l.parse::<i64>().ok()?;
            self.id2label.iter().position(|n| n.parse::<i64>().ok() == Some(v)).map(|i| i as u32)
        })
    }

    /// The tag set of a token-classification file: the distinct tags sorted as text, with
    /// `O` (outside any entity) first when present, as Hugging Face's NER data sets have it.
    pub fn infer_tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> Self {
        let distinct: BTreeSet<&str> = tags.into_iter().map(str::trim).filter(|t| !t.is_empty()).collect();
        let mut names: Vec<String> = distinct.iter().filter(|&&t| t != "O").map(|t| t.to_string()).collect();
        if distinct.contains("O") {
            names.insert(0, "O".into());
        }
        Self::from_names(names)
    }

    /// The id of a token tag: its name, or, when the names were declared (`[data] labels`),
    /// an integer that is a position in that list (JSON Lines with integer tags).
    pub fn tag_id(&self, tag: &str, declared: bool) -> Option<u32> {
        self.index.get(tag.trim()).copied().or_else(|| {
            let i = tag.trim().parse::<usize>().ok().filter(|_| declared)?;
            (i < self.id2label.len()).then_some(i as u32)
        })
    }

    /// The label text of a class id.
    pub fn name(&self, id: u32) -> Option<&str> {
        self.id2label.get(id as usize).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.id2label.len()
    }

    pub fn is_empty(&self) -> bool {
        self.id2label.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_labels_keep_their_ids() {
        let m = LabelMap::infer(["1", "0", "2", "1"]);
        assert_eq!(m.id2label, vec!["0", "1", "2"]);
        assert_eq!(m.id("2"), Some(2));
    }

    #[test]
    fn other_labels_are_sorted() {
        let m = LabelMap::infer(["pos", "neg", "neutral", "pos"]);
        assert_eq!(m.id2label, vec!["neg", "neutral", "pos"]);
        assert_eq!(m.id("pos"), Some(2));
        assert_eq!(m.id("other"), None);
        let m = LabelMap::infer(["10", "2", "5"]);
        assert_eq!(m.id2label, vec!["2", "5", "10"], "integers sort by value");
        assert_eq!(m.name(2), Some("10"));
    }

    #[test]
    fn serde_round_trip_keeps_lookups() {
        let m = LabelMap::infer(["pos", "neg"]);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"id2label":["neg","pos"]}"#);
        let back: LabelMap = serde_json::from_str(&json).unwrap();
        assert_eq!(back.id("pos"), Some(1));
        assert_eq!(back, m);
    }

    #[test]
    fn tags_put_o_first_and_integers_index_declared_names() {
        let m = LabelMap::infer_tags(["B-per", "O", "I-per", "O", "B-loc"]);
        assert_eq!(m.id2label, vec!["O", "B-loc", "B-per", "I-per"]);
        assert_eq!(m.tag_id("I-per", false), Some(3));
        assert_eq!(m.tag_id("2", false), None, "integers are ids only when the names were declared");
        assert_eq!(m.tag_id("2", true), Some(2));
        assert_eq!(m.tag_id("4", true), None);
    }

    #[test]
    fn declared_order_is_kept() {
        let m = LabelMap::from_names(vec!["pos".into(), "neg".into()]);
        assert_eq!((m.id("pos"), m.id("neg"), m.id("x")), (Some(0), Some(1), None));
    }
}
