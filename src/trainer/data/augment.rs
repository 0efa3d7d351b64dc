//! Text augmentation for training rows only: each word is, with probability `prob`, either
//! deleted or swapped with its right neighbour (half the time each). At least one word is
//! always kept. Randomness is seeded per (seed, epoch, row), so an epoch's augmented rows are
//! the same however often it is replayed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::batch::epoch_seed;
use super::Example;

/// Deletes or swaps words of `text` with probability `prob` each (see module doc).
pub fn augment_text<R: Rng>(text: &str, prob: f64, rng: &mut R) -> String {
    let prob = if prob.is_finite() { prob.clamp(0.0, 1.0) } else { 0.0 };
    let words: Vec<&str> = text.split_whitespace().collect();
    if prob == 0.0 || words.len() < 2 {
        return text.to_string();
    }
    let half = prob / 2.0;
    let mut kept: Vec<&str> = Vec::with_capacity(words.len());
    let mut swap_after: Vec<bool> = Vec::with_capacity(words.len());
    for w in &words {
        let u: f64 = rng.random();
        if u < half {
            continue; // deleted
        }
        kept.push(w);
        swap_after.push(u < prob);
    }
    if kept.is_empty() {
        kept.push(words[rng.random_range(0..words.len())]);
        swap_after.push(false);
    }
    let last = kept.len() - 1;
    for (i, _) in swap_after.iter().enumerate().filter(|&(i, &s)| s && i < last) {
        kept.swap(i, i + 1);
    }
    kept.join(" ")
}

/// The training rows of one epoch, augmented (both texts of a pair independently).
pub fn augment_examples(examples: &[Example], prob: f64, seed: u64, epoch: usize) -> Vec<Example> {
    if prob <= 0.0 {
        return examples.to_vec();
    }
    let base = epoch_seed(seed, epoch);
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut rng = ChaCha8Rng::seed_from_u64(epoch_seed(base, i));
            Example {
                text: augment_text(&e.text, prob, &mut rng),
                text_pair: e.text_pair.as_deref().map(|p| augment_text(p, prob, &mut rng)),
                label: e.label.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::data::Target;

    fn rows() -> Vec<Example> {
        (0..50)
            .map(|i| Example {
                text: format!("the film number {i} was really quite good overall"),
                text_pair: None,
                label: Target::Class(1),
            })
            .collect()
    }

    #[test]
    fn zero_prob_is_identity_and_seeded_is_reproducible() {
        let r = rows();
        assert_eq!(augment_examples(&r, 0.0, 1, 0), r);
        let a = augment_examples(&r, 0.3, 1, 0);
        assert_eq!(a, augment_examples(&r, 0.3, 1, 0));
        assert_ne!(a, augment_examples(&r, 0.3, 1, 1));
        assert_ne!(a, r);
        let mut changed = 0;
        for (x, y) in a.iter().zip(&r) {
            let nx = x.text.split(' ').count();
            assert!((1..=9).contains(&nx));
            // only words of the original, each at most as often
            for w in x.text.split(' ') {
                assert!(y.text.split(' ').any(|v| v == w), "{w}");
            }
            changed += usize::from(x.text != y.text);
        }
        assert!(changed > 35, "{changed} of 50 changed at p = 0.3");
    }

    #[test]
    fn keeps_at_least_one_word() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..100 {
            assert!(!augment_text("a b", 1.0, &mut rng).is_empty());
        }
        assert_eq!(augment_text("single", 1.0, &mut rng), "single");
    }
}
