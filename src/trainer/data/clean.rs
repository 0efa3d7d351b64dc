//! Cleaning with counts: whitespace is trimmed and collapsed, rows with an empty text (or
//! empty pair text) are dropped, and, when asked, exact duplicates of an earlier row's
//! (text, text pair) are dropped (the first occurrence is kept).

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::read::RawRow;

/// What cleaning did, summed over the files read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleaningReport {
    /// Data rows read from the files.
    pub rows_read: usize,
    /// Rows left out by `max_rows` sampling.
    pub sampled_out: usize,
    /// Rows whose text changed by trimming or collapsing whitespace (they are kept).
    pub trimmed: usize,
    /// Rows dropped because a text was empty after trimming.
    pub empty_dropped: usize,
    /// Rows dropped as duplicates (only with `dedup`).
    pub duplicates_dropped: usize,
    /// Of the duplicates dropped, those whose label differed from the kept row's.
    pub conflicting_duplicates: usize,
    /// Rows kept.
    pub rows_kept: usize,
}

impl CleaningReport {
    /// Adds another file's counts.
    pub fn add(&mut self, o: &CleaningReport) {
        self.rows_read += o.rows_read;
        self.sampled_out += o.sampled_out;
        self.trimmed += o.trimmed;
        self.empty_dropped += o.empty_dropped;
        self.duplicates_dropped += o.duplicates_dropped;
        self.conflicting_duplicates += o.conflicting_duplicates;
        self.rows_kept += o.rows_kept;
    }
}

impl fmt::Display for CleaningReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rows read, {} kept ({} whitespace-trimmed, {} empty dropped, {} duplicates dropped of which {} had another label",
            self.rows_read, self.rows_kept, self.trimmed, self.empty_dropped, self.duplicates_dropped, self.conflicting_duplicates
        )?;
        if self.sampled_out > 0 {
            write!(f, ", {} left out by max_rows", self.sampled_out)?;
        }
        write!(f, ")")
    }
}

/// Trims and collapses runs of whitespace (any Unicode whitespace) to one space.
pub fn normalize_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// Cleans the rows of one file; returns the kept rows and the counts (`rows_read` is the
/// number of rows given).
pub fn clean_rows(rows: Vec<RawRow>, dedup: bool) -> (Vec<RawRow>, CleaningReport) {
    let mut rep = CleaningReport { rows_read: rows.len(), ..Default::default() };
    let mut seen: HashMap<(String, Option<String>), Option<String>> = HashMap::new();
    let mut kept = Vec::with_capacity(rows.len());
    for mut r in rows {
        let t = normalize_whitespace(&r.text);
        let p = r.text_pair.as_deref().map(normalize_whitespace);
        if t != r.text || p.as_deref() != r.text_pair.as_deref() {
            rep.trimmed += 1;
        }
        if t.is_empty() || p.as_deref().is_some_and(str::is_empty) {
            rep.empty_dropped += 1;
            continue;
        }
        r.text = t;
        r.text_pair = p;
        if dedup {
            let key = (r.text.clone(), r.text_pair.clone());
            if let Some(first_label) = seen.get(&key) {
                rep.duplicates_dropped += 1;
                if first_label.as_deref().map(str::trim) != r.label.as_deref().map(str::trim) {
                    rep.conflicting_duplicates += 1;
                }
                continue;
            }
            seen.insert(key, r.label.clone());
        }
        kept.push(r);
    }
    rep.rows_kept = kept.len();
    (kept, rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize, text: &str, label: &str) -> RawRow {
        RawRow { line: i as u64 + 1, row: i, text: text.into(), text_pair: None, label: Some(label.into()) }
    }

    #[test]
    fn counts_are_right() {
        let rows = vec![
            row(1, "  good  film ", "1"),
            row(2, "good film", "1"),
            row(3, "   ", "0"),
            row(4, "bad\t\nfilm", "0"),
            row(5, "good film", "0"),
            row(6, "", "1"),
            row(7, "fine", "1"),
        ];
        let (kept, rep) = clean_rows(rows.clone(), true);
        assert_eq!(kept.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(), vec!["good film", "bad film", "fine"]);
        assert_eq!(
            rep,
            CleaningReport {
                rows_read: 7,
                sampled_out: 0,
                trimmed: 3, // rows 1, 3 (becomes empty), 4
                empty_dropped: 2,
                duplicates_dropped: 2,
                conflicting_duplicates: 1,
                rows_kept: 3,
            }
        );
        let (kept, rep) = clean_rows(rows, false);
        assert_eq!(kept.len(), 5);
        assert_eq!((rep.duplicates_dropped, rep.empty_dropped, rep.rows_kept), (0, 2, 5));
    }

    #[test]
    fn empty_pair_text_drops_the_row() {
        let mut r = row(1, "premise", "1");
        r.text_pair = Some("  ".into());
        let (kept, rep) = clean_rows(vec![r], false);
        assert!(kept.is_empty());
        assert_eq!(rep.empty_dropped, 1);
    }
}
