//! Token lengths of a data set's rows before truncation: what a `max_length` cuts, reported
//! before any trial runs so a too-short setting is seen at once, not after hours of training.

use std::path::Path;

use tokenizers::EncodeInput;

use super::tokenize::load_tokenizer;
use super::{DataError, Example};

/// How many rows `run` and `predict` measure (evenly spaced over the rows).
pub const SAMPLE_ROWS: usize = 2000;

/// The truncated share from which `run` and `predict` warn: a tenth of the rows.
pub const WARN_SHARE: f64 = 0.1;

/// Token lengths (special tokens included, nothing truncated) of evenly spaced rows.
#[derive(Debug, Clone, PartialEq)]
pub struct LengthSummary {
    /// Sorted.
    lengths: Vec<usize>,
    /// Rows the sample was drawn from.
    pub of_rows: usize,
}

impl LengthSummary {
    /// Rows measured.
    pub fn rows(&self) -> usize {
        self.lengths.len()
    }

    /// The length at quantile `q` in [0, 1] (nearest rank).
    pub fn quantile(&self, q: f64) -> usize {
        if self.lengths.is_empty() {
            return 0;
        }
        let rank = (q.clamp(0.0, 1.0) * self.lengths.len() as f64).ceil() as usize;
        self.lengths[rank.clamp(1, self.lengths.len()) - 1]
    }

    pub fn longest(&self) -> usize {
        self.lengths.last().copied().unwrap_or(0)
    }

    /// Whether `max_length` truncates enough rows to warn about ([`WARN_SHARE`] or more).
    pub fn cuts_many(&self, max_length: usize) -> bool {
        self.truncated_share(max_length) >= WARN_SHARE
    }

    /// The share of measured rows longer than `max_length` tokens (which it truncates).
    pub fn truncated_share(&self, max_length: usize) -> f64 {
        if self.lengths.is_empty() {
            return 0.0;
        }
        let fit = self.lengths.partition_point(|&l| l <= max_length);
        (self.lengths.len() - fit) as f64 / self.lengths.len() as f64
    }
}

/// Measures at most `sample` rows of `examples`, evenly spaced, with the tokenizer of the
/// model folder `dir` (pairs encoded as pairs).
pub fn length_summary(dir: &Path, examples: &[Example], sample: usize) -> Result<LengthSummary, DataError> {
    length_summary_of(dir, examples, sample, |e| (e.text.as_str(), e.text_pair.as_deref()))
}

/// [`length_summary`] of any rows, given their text and optional second text.
pub fn length_summary_of<T>(
    dir: &Path,
    rows: &[T],
    sample: usize,
    texts: impl Fn(&T) -> (&str, Option<&str>),
) -> Result<LengthSummary, DataError> {
    let mut tokenizer = load_tokenizer(dir)?;
    tokenizer.with_truncation(None).map_err(|e| DataError::Encode(format!("{}: {e}", dir.display())))?;
    tokenizer.with_padding(None);
    let n = rows.len();
    let take = sample.min(n);
    let picked = (0..take).map(|i| texts(&rows[i * n / take.max(1)]));
    let inputs: Vec<EncodeInput> = picked
        .map(|(t, p)| match p {
            Some(p) => EncodeInput::Dual(t.into(), p.into()),
            None => EncodeInput::Single(t.into()),
        })
        .collect();
    let encs = tokenizer.encode_batch(inputs, true).map_err(|e| DataError::Encode(format!("{}: {e}", dir.display())))?;
    let mut lengths: Vec<usize> = encs.iter().map(|e| e.get_ids().len()).collect();
    lengths.sort_unstable();
    Ok(LengthSummary { lengths, of_rows: n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::data::Target;

    fn ex(t: &str) -> Example {
        Example { text: t.into(), text_pair: None, label: Target::Class(0) }
    }

    #[test]
    fn lengths_count_special_tokens_and_what_a_max_length_cuts() {
        let dir = super::super::tokenize::tests::vocab_dir(Some(true));
        // [CLS] + words + [SEP]: 3, 4, 5, 6 tokens.
        let rows: Vec<Example> = ["good", "good film", "very good film", "the film is good"].into_iter().map(ex).collect();
        let s = length_summary(dir.path(), &rows, 100).unwrap();
        assert_eq!((s.rows(), s.of_rows, s.longest()), (4, 4, 6));
        assert_eq!((s.quantile(0.5), s.quantile(0.95), s.quantile(0.0)), (4, 6, 3));
        assert_eq!(s.truncated_share(6), 0.0);
        assert_eq!(s.truncated_share(4), 0.5);
        assert_eq!(s.truncated_share(2), 1.0);
        // A sample of two: evenly spaced rows 0 and 2.
        let s = length_summary(dir.path(), &rows, 2).unwrap();
        assert_eq!((s.rows(), s.of_rows, s.longest()), (2, 4, 5));
        // Pairs count both texts and their separators.
        let pair = vec![Example { text: "good".into(), text_pair: Some("bad film".into()), label: Target::Class(0) }];
        assert_eq!(length_summary(dir.path(), &pair, 10).unwrap().longest(), 6);
    }
}
