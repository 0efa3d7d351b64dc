//! Row lookup in an embedding table as one candle op (CPU, f32, u32 ids) whose backward
//! writes the table's gradient directly: a zeroed buffer with each id's gradient row added in.
//!
//! Through candle's `index_select` the backward makes a zero tensor of the table's size, and
//! `index_add` then copies it into a second one before adding: for BERT's 30,522 × 384 word
//! table that is two 47 MB buffers, a 47 MB copy and ~11,500 page faults per step, ~3% of a
//! MiniLM step's CPU time (RoBERTa's 50,265 × 768 table costs 3.3× that). Here the only
//! buffer is the gradient itself; at that size glibc maps it fresh, so it comes zeroed and
//! only the pages of the rows the batch used are written. Other devices and dtypes use
//! `index_select`.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::ops::contiguous_f32;

/// `table[ids]`: the rows of a `[rows, h]` table for the 1-D `ids`, as `[ids, h]`.
pub fn lookup(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    if table.device().is_cpu() && table.dtype() == DType::F32 && ids.dtype() == DType::U32 && table.rank() == 2 {
        table.contiguous()?.apply_op2(&ids.contiguous()?, Lookup)
    } else {
        table.index_select(ids, 0)
    }
}

fn table_dims(l: &Layout) -> Result<(usize, usize)> {
    match l.shape().dims() {
        &[rows, h] => Ok((rows, h)),
        d => bail!("embedding: the table must be 2-D, got {d:?}"),
    }
}

fn ids<'a>(s: &'a CpuStorage, l: &Layout, rows: usize) -> Result<&'a [u32]> {
    let ids = match l.contiguous_offsets() {
        Some((a, b)) => &s.as_slice::<u32>()?[a..b],
        None => bail!("embedding: the ids are not contiguous"),
    };
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= rows) {
        bail!("embedding: token id {bad} is outside the table of {rows} rows (a tokenizer that does not match the model?)")
    }
    Ok(ids)
}

struct Lookup;

impl CustomOp2 for Lookup {
    fn name(&self) -> &'static str {
        "sft-embedding"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, h) = table_dims(l1)?;
        let table = contiguous_f32(s1, l1, "embedding table")?;
        let ids = ids(s2, l2, rows)?;
        let mut out = Vec::with_capacity(ids.len() * h);
        for &id in ids {
            out.extend_from_slice(&table[id as usize * h..][..h]);
        }
        Ok((CpuStorage::F32(out), Shape::from((ids.len(), h))))
    }

    fn bwd(&self, table: &Tensor, ids: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, h) = table.dims2()?;
        let dtable = ids.apply_op2_no_bwd(&grad.contiguous()?, &LookupBwd { rows, h })?;
        Ok((Some(dtable), None))
    }
}

/// `[rows, h]` zeros with `grad[i]` added to row `ids[i]` for every i.
struct LookupBwd {
    rows: usize,
    h: usize,
}

impl CustomOp2 for LookupBwd {
    fn name(&self) -> &'static str {
        "sft-embedding-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, h) = (self.rows, self.h);
        let ids = ids(s1, l1, rows)?;
        let grad = contiguous_f32(s2, l2, "embedding gradient")?;
        if grad.len() != ids.len() * h {
            bail!("embedding bwd: a gradient of {} values for {} ids of width {h}", grad.len(), ids.len())
        }
        let mut out = vec![0f32; rows * h];
        for (&id, g) in ids.iter().zip(grad.chunks_exact(h.max(1))) {
            for (o, g) in out[id as usize * h..][..h].iter_mut().zip(g) {
                *o += g;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, h))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Forward and gradient equal `index_select`'s, repeated ids included.
    #[test]
    fn lookup_matches_index_select_forward_and_backward() {
        let dev = Device::Cpu;
        let vals: Vec<f32> = (0..7 * 5).map(|i| ((i * 37) % 11) as f32 / 7.0 - 0.6).collect();
        let table = Var::from_vec(vals, (7, 5), &dev).unwrap();
        let ids = Tensor::new(&[3u32, 0, 6, 3, 3, 1], &dev).unwrap();
        let weights = Tensor::arange(0f32, 30.0, &dev).unwrap().reshape((6, 5)).unwrap();

        let ours = lookup(table.as_tensor(), &ids).unwrap();
        let theirs = table.as_tensor().index_select(&ids, 0).unwrap();
        assert_eq!(ours.to_vec2::<f32>().unwrap(), theirs.to_vec2::<f32>().unwrap());

        let g_ours = (ours * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let g_theirs = (theirs * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let a = g_ours.get(table.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        let b = g_theirs.get(table.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(a, b);
        // Row 3 was used three times, rows 2, 4 and 5 never.
        assert_eq!(a[3][0], 0.0 + 15.0 + 20.0);
        assert!(a[2].iter().chain(&a[4]).chain(&a[5]).all(|&x| x == 0.0));
    }

    #[test]
    fn an_id_outside_the_table_is_an_error_naming_it() {
        let dev = Device::Cpu;
        let table = Tensor::zeros((4, 3), DType::F32, &dev).unwrap();
        let ids = Tensor::new(&[1u32, 9], &dev).unwrap();
        let err = lookup(&table, &ids).unwrap_err().to_string();
        assert!(err.contains("token id 9") && err.contains("4 rows"), "{err}");
    }
}
