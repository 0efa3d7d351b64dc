//! Batching: which rows go together ([`batch_indices`]) and turning rows into tensors
//! padded to the longest row of the batch ([`collate`]).
//!
//! Shuffling is seeded per epoch ([`epoch_seed`]`(seed, epoch)`), so every epoch is
//! reproducible and a run can resume from any epoch boundary. With length bucketing the
//! (shuffled) rows are cut into chunks of [`BUCKET_BATCHES`] batches, each chunk is sorted by
//! length and cut into batches, and the batch order is shuffled — short rows then travel with
//! short rows and pay for little padding. The last batch may be smaller.
//!
//! Gradient accumulation: take a batch's indices from [`batch_indices`], cut them into micro
//! batches and [`collate`] each, so each micro batch pads only to its own longest row.

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::error::DataError;
use super::tokenize::Encoded;
use super::{Target, IGNORE_TAG};

/// Batches per length-sorted chunk when bucketing.
pub const BUCKET_BATCHES: usize = 50;

/// One batch on a device. All `[b, L]` with `L` the longest row of the batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// u32 `[b, L]`, padded with the pad id.
    pub input_ids: Tensor,
    /// u32 `[b, L]`: 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor,
    /// u32 `[b, L]` (0 in padding).
    pub token_type_ids: Tensor,
    /// u32 `[b]` class ids, or f32 `[b]` regression targets; for token classification u32
    /// `[n]`, the tags of the `n` scored tokens (see `scored_positions`); for multi-label f32
    /// `[b, k]`, 1 where the row has the label and 0 elsewhere.
    pub labels: Tensor,
    /// Token classification: u32 `[n]`, where each scored token sits in the `[b · L]`
    /// flattening of the batch (row-major), in row order; `None` otherwise.
    pub scored_positions: Option<Tensor>,
    /// Token classification: how many scored tokens each row has (empty otherwise).
    pub scored_per_row: Vec<usize>,
    /// Positions of the rows in the encoded slice (to map predictions back).
    pub indices: Vec<usize>,
    /// Non-padding tokens in the batch.
    pub real_tokens: usize,
}

impl Batch {
    pub fn size(&self) -> usize {
        self.indices.len()
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The shuffle seed of one epoch, mixed from the trial seed and the epoch number.
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    splitmix64(seed ^ splitmix64(epoch as u64 ^ 0xA5A5_5A5A_0000_0000))
}

/// Groups row positions into batches of `batch_size` (at least 1). `lengths[i]` is row i's
/// token count. No seed: file order (sorted within chunks when bucketing).
pub fn batch_indices(lengths: &[usize], batch_size: usize, shuffle_seed: Option<u64>, length_bucketing: bool) -> Vec<Vec<usize>> {
    let bs = batch_size.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    let mut rng = shuffle_seed.map(ChaCha8Rng::seed_from_u64);
    if let Some(rng) = rng.as_mut() {
        order.shuffle(rng);
    }
    if !length_bucketing {
        return order.chunks(bs).map(<[usize]>::to_vec).collect();
    }
    let mut batches = Vec::with_capacity(order.len().div_ceil(bs));
    for chunk in order.chunks_mut(bs * BUCKET_BATCHES) {
        chunk.sort_by_key(|&i| lengths[i]);
        batches.extend(chunk.chunks(bs).map(<[usize]>::to_vec));
    }
    if let Some(rng) = rng.as_mut() {
        batches.shuffle(rng);
    }
    batches
}

/// Builds one batch of `indices` from `encoded`, padded to its longest row with `pad_id`.
pub fn collate(encoded: &[Encoded], indices: &[usize], pad_id: u32, device: &Device) -> Result<Batch, DataError> {
    if indices.is_empty() {
        return Err(DataError::Batch("empty batch".into()));
    }
    let rows: Vec<&Encoded> = indices
        .iter()
        .map(|&i| encoded.get(i).ok_or_else(|| DataError::Batch(format!("row {i} out of range ({})", encoded.len()))))
        .collect::<Result<_, _>>()?;
    let b = rows.len();
    let l = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![pad_id; b * l];
    let mut mask = vec![0u32; b * l];
    let mut types = vec![0u32; b * l];
    let mut real = 0;
    for (r, row) in rows.iter().enumerate() {
        let n = row.ids.len();
        ids[r * l..r * l + n].copy_from_slice(&row.ids);
        mask[r * l..r * l + n].fill(1);
        let nt = row.type_ids.len().min(n);
        types[r * l..r * l + nt].copy_from_slice(&row.type_ids[..nt]);
        real += n;
    }
    let mut scored_positions = None;
    let mut scored_per_row = Vec::new();
    let labels = match &rows[0].label {
        Target::Tags(_) => {
            let (mut pos, mut tags) = (Vec::new(), Vec::new());
            for (r, row) in rows.iter().enumerate() {
                let Target::Tags(t) = &row.label else {
                    return Err(DataError::Batch("mixed token tags and row targets".into()));
                };
                let before = tags.len();
                for (i, &tag) in t.iter().enumerate().filter(|(_, &tag)| tag != IGNORE_TAG) {
                    pos.push((r * l + i) as u32);
                    tags.push(tag);
                }
                scored_per_row.push(tags.len() - before);
            }
            let n = tags.len();
            scored_positions = Some(Tensor::from_vec(pos, n, device)?);
            Tensor::from_vec(tags, n, device)?
        }
        Target::Class(_) => {
            let v: Vec<u32> = rows
                .iter()
                .map(|r| r.label.class().ok_or_else(|| DataError::Batch("mixed class and regression targets".into())))
                .collect::<Result<_, _>>()?;
            Tensor::from_vec(v, b, device)?
        }
        Target::Labels(first) => {
            let k = first.len();
            let mut v = Vec::with_capacity(b * k);
            for r in &rows {
                match &r.label {
                    Target::Labels(f) if f.len() == k => v.extend(f.iter().map(|&on| if on { 1f32 } else { 0.0 })),
                    _ => return Err(DataError::Batch("mixed multi-label rows and other targets".into())),
                }
            }
            Tensor::from_vec(v, (b, k), device)?
        }
        Target::Value(_) => {
            let v: Vec<f32> = rows
                .iter()
                .map(|r| match r.label {
                    Target::Value(v) => Ok(v),
                    _ => Err(DataError::Batch("mixed class and regression targets".into())),
                })
                .collect::<Result<_, _>>()?;
            Tensor::from_vec(v, b, device)?
        }
    };
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, (b, l), device)?,
        attention_mask: Tensor::from_vec(mask, (b, l), device)?,
        token_type_ids: Tensor::from_vec(types, (b, l), device)?,
        labels,
        scored_positions,
        scored_per_row,
        indices: indices.to_vec(),
        real_tokens: real,
    })
}

/// Batches of one epoch, built lazily.
pub struct BatchIter<'a> {
    encoded: &'a [Encoded],
    plan: Vec<Vec<usize>>,
    pos: usize,
    pad_id: u32,
    device: Device,
}

impl<'a> BatchIter<'a> {
    /// The row positions of every batch, in order.
    pub fn plan(&self) -> &[Vec<usize>] {
        &self.plan
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let idx = self.plan.get(self.pos)?;
        self.pos += 1;
        Some(collate(self.encoded, idx, self.pad_id, &self.device))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.plan.len() - self.pos;
        (n, Some(n))
    }
}

impl ExactSizeIterator for BatchIter<'_> {}

/// The batches of one epoch: `shuffle_seed` = `Some(epoch_seed(seed, epoch))` for training,
/// `None` for evaluation.
pub fn make_batches<'a>(
    encoded: &'a [Encoded],
    batch_size: usize,
    shuffle_seed: Option<u64>,
    length_bucketing: bool,
    pad_id: u32,
    device: &Device,
) -> BatchIter<'a> {
    let lengths: Vec<usize> = encoded.iter().map(Encoded::len).collect();
    BatchIter { encoded, plan: batch_indices(&lengths, batch_size, shuffle_seed, length_bucketing), pos: 0, pad_id, device: device.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(n: usize, label: u32) -> Encoded {
        let ids: Vec<u32> = (0..n as u32).map(|i| 10 + i).collect();
        let type_ids = (0..n).map(|i| u32::from(i > n / 2)).collect();
        Encoded { ids, type_ids, label: Target::Class(label) }
    }

    #[test]
    fn pads_to_the_longest_in_the_batch() {
        let rows = vec![enc(3, 0), enc(7, 1), enc(5, 1), enc(12, 0)];
        let b = collate(&rows, &[0, 1, 2], 0, &Device::Cpu).unwrap();
        assert_eq!(b.input_ids.dims(), &[3, 7]);
        let ids: Vec<Vec<u32>> = b.input_ids.to_vec2().unwrap();
        assert_eq!(ids[0], vec![10, 11, 12, 0, 0, 0, 0]);
        assert_eq!(ids[1], (10..17).collect::<Vec<u32>>());
        let mask: Vec<Vec<u32>> = b.attention_mask.to_vec2().unwrap();
        assert_eq!(mask[2], vec![1, 1, 1, 1, 1, 0, 0]);
        let types: Vec<Vec<u32>> = b.token_type_ids.to_vec2().unwrap();
        assert_eq!(types[1], vec![0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(types[0], vec![0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(b.labels.to_vec1::<u32>().unwrap(), vec![0, 1, 1]);
        assert_eq!(b.real_tokens, 15);
        let b = collate(&rows, &[3, 0], 7, &Device::Cpu).unwrap();
        assert_eq!(b.input_ids.dims(), &[2, 12]);
        assert_eq!(b.input_ids.to_vec2::<u32>().unwrap()[1][3..], [7u32; 9]);
    }

    #[test]
    fn token_tags_become_scored_positions() {
        let i = IGNORE_TAG;
        let rows = vec![
            Encoded { ids: vec![2, 5, 6, 3], type_ids: vec![0; 4], label: Target::Tags(vec![i, 1, 0, i]) },
            Encoded { ids: vec![2, 7, 8, 9, 10, 3], type_ids: vec![0; 6], label: Target::Tags(vec![i, 2, i, 0, 1, i]) },
        ];
        let b = collate(&rows, &[0, 1], 0, &Device::Cpu).unwrap();
        assert_eq!(b.input_ids.dims(), &[2, 6]);
        assert_eq!(b.scored_positions.unwrap().to_vec1::<u32>().unwrap(), vec![1, 2, 7, 9, 10]);
        assert_eq!(b.labels.to_vec1::<u32>().unwrap(), vec![1, 0, 2, 0, 1]);
        assert_eq!(b.scored_per_row, vec![2, 3]);
    }

    #[test]
    fn regression_labels_are_f32() {
        let rows = vec![Encoded { ids: vec![1, 2], type_ids: vec![0, 0], label: Target::Value(0.5) }];
        let b = collate(&rows, &[0], 0, &Device::Cpu).unwrap();
        assert_eq!(b.labels.to_vec1::<f32>().unwrap(), vec![0.5]);
    }

    #[test]
    fn label_sets_become_a_multi_hot_matrix() {
        let row = |f: Vec<bool>| Encoded { ids: vec![1, 2], type_ids: vec![0, 0], label: Target::Labels(f) };
        let rows = vec![row(vec![true, false, true]), row(vec![false; 3]), row(vec![false, true, false])];
        let b = collate(&rows, &[0, 1, 2], 0, &Device::Cpu).unwrap();
        assert_eq!(b.labels.to_vec2::<f32>().unwrap(), vec![vec![1.0, 0.0, 1.0], vec![0.0; 3], vec![0.0, 1.0, 0.0]]);
        let mixed = vec![row(vec![true, false, true]), Encoded { ids: vec![1], type_ids: vec![0], label: Target::Class(0) }];
        assert!(collate(&mixed, &[0, 1], 0, &Device::Cpu).is_err());
    }

    fn lengths() -> Vec<usize> {
        (0..1003).map(|i| 3 + (i * 7919) % 60).collect()
    }

    fn assert_partition(batches: &[Vec<usize>], n: usize, bs: usize) {
        let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= bs));
        assert_eq!(batches.iter().filter(|b| b.len() < bs).count(), usize::from(!n.is_multiple_of(bs)));
    }

    #[test]
    fn same_seed_same_batches_other_epoch_other_batches() {
        let l = lengths();
        for bucket in [false, true] {
            let a = batch_indices(&l, 16, Some(epoch_seed(42, 0)), bucket);
            assert_eq!(a, batch_indices(&l, 16, Some(epoch_seed(42, 0)), bucket));
            assert_ne!(a, batch_indices(&l, 16, Some(epoch_seed(42, 1)), bucket));
            assert_ne!(a, batch_indices(&l, 16, Some(epoch_seed(43, 0)), bucket));
            assert_partition(&a, l.len(), 16);
        }
        let plain = batch_indices(&l, 16, None, false);
        assert_eq!(plain[0], (0..16).collect::<Vec<_>>());
        assert_partition(&plain, l.len(), 16);
    }

    #[test]
    fn bucketing_reduces_padding() {
        let l = lengths();
        let padded = |bs: &[Vec<usize>]| -> usize { bs.iter().map(|b| b.len() * b.iter().map(|&i| l[i]).max().unwrap_or(0)).sum() };
        let plain = padded(&batch_indices(&l, 16, Some(7), false));
        let bucketed = padded(&batch_indices(&l, 16, Some(7), true));
        assert!(bucketed * 10 < plain * 7, "bucketed {bucketed} vs plain {plain}");
        // within a bucketed batch lengths are close
        let b = batch_indices(&l, 16, Some(7), true);
        let spread: usize = b
            .iter()
            .map(|b| {
                let ls: Vec<usize> = b.iter().map(|&i| l[i]).collect();
                ls.iter().max().unwrap() - ls.iter().min().unwrap()
            })
            .max()
            .unwrap();
        assert!(spread <= 6, "spread {spread}");
    }

    #[test]
    fn iterator_yields_every_row_once() {
        let rows: Vec<Encoded> = (0..37).map(|i| enc(2 + i % 9, (i % 2) as u32)).collect();
        let it = make_batches(&rows, 8, Some(1), true, 0, &Device::Cpu);
        assert_eq!(it.len(), 5);
        let mut seen = Vec::new();
        for b in it {
            let b = b.unwrap();
            let longest = b.indices.iter().map(|&i| rows[i].len()).max().unwrap();
            assert_eq!(b.input_ids.dims(), &[b.size(), longest]);
            seen.extend(b.indices);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..37).collect::<Vec<_>>());
    }
}
