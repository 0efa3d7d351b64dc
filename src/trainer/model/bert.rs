//! The BERT encoder blocks (embeddings, self-attention, feed-forward, classification head) over
//! `Var`s, structured like Hugging Face's `BertModel` so every weight has its HF name; RoBERTa
//! and DistilBERT are the same blocks under other names (`arch.rs`).
//!
//! Each block's forward takes a [`Pass`]: in training mode dropout is on; a `frozen` block reads
//! its weights detached so candle records no graph for it at all.

use candle_core::{DType, Result, Tensor, Var};

use super::arch::HeadActivation;
use super::attention;
use super::linear;
use super::ops::{self, Dropout};

/// How one forward pass runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pass {
    pub train: bool,
    pub frozen: bool,
    /// The dtype of activations and matmuls (f32, or bf16 for mixed precision); the weights
    /// stay f32 (the master copy) and are cast on use, which autograd differentiates, so
    /// their gradients arrive in f32.
    pub dtype: DType,
}

impl Pass {
    /// The weight as the computation uses it (cast to `dtype`; a no-op clone in f32).
    fn w(&self, v: &Var) -> Result<Tensor> {
        self.w32(v).to_dtype(self.dtype)
    }

    /// The weight in its stored f32 (layer norms and embeddings compute in f32).
    fn w32(&self, v: &Var) -> Tensor {
        if self.frozen {
            v.as_tensor().detach()
        } else {
            v.as_tensor().clone()
        }
    }
}

pub(crate) struct Linear {
    pub weight: Var, // [out, in]
    pub bias: Var,   // [out]
}

impl Linear {
    /// `x Wᵀ` without the bias (fused into the following op), shape `[.., out]`.
    pub fn matmul(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        linear::matmul_wt(x, &pass.w(&self.weight)?)
    }

    pub fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let inner = *dims.last().unwrap_or(&1);
        let rows = x.elem_count() / inner.max(1);
        let w = pass.w(&self.weight)?;
        let y = x.reshape((rows, inner))?.matmul(&w.t()?)?.broadcast_add(&pass.w(&self.bias)?)?;
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = w.dim(0)?;
        }
        y.reshape(out)
    }
}

pub(crate) struct LayerNorm {
    pub weight: Var,
    pub bias: Var,
    pub eps: f64,
}

impl LayerNorm {
    /// Normalises in f32 whatever the input's dtype, and returns the input's dtype.
    pub fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        ops::layer_norm(&x.to_dtype(DType::F32)?, &pass.w32(&self.weight), &pass.w32(&self.bias), self.eps)?.to_dtype(x.dtype())
    }
}

pub(crate) struct Embeddings {
    pub word: Var,
    pub position: Var,
    /// None for DistilBERT, which has no token types.
    pub token_type: Option<Var>,
    /// The position id of the first token (RoBERTa: `pad_token_id + 1`).
    pub position_offset: usize,
    pub norm: LayerNorm,
    /// ELECTRA's map from narrower embeddings up to the hidden size.
    pub project: Option<Linear>,
}

impl Embeddings {
    pub fn forward(&self, ids: &Tensor, token_types: &Tensor, pass: Pass, p: f64, dropout: &Dropout) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        // Gathered and normalised in f32, then cast to the compute dtype.
        let word = pass.w32(&self.word);
        let h = word.dim(1)?;
        let we = super::embedding::lookup(&word, &ids.flatten_all()?)?.reshape((b, s, h))?;
        let x = match &self.token_type {
            // One token type (RoBERTa): every token gets its row, whatever the tokenizer said.
            Some(table) if table.dim(0)? == 1 => we.broadcast_add(&pass.w32(table))?,
            Some(table) => (we + pass.w32(table).index_select(&token_types.flatten_all()?, 0)?.reshape((b, s, h))?)?,
            None => we,
        };
        let pe = pass.w32(&self.position).narrow(0, self.position_offset, s)?;
        let x = x.broadcast_add(&pe)?;
        let x = self.norm.forward(&x, pass)?.to_dtype(pass.dtype)?;
        let x = if pass.train { dropout.apply(&x, p)? } else { x };
        match &self.project {
            Some(project) => project.forward(&x, pass),
            None => Ok(x),
        }
    }
}

pub(crate) struct EncoderLayer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attn_out: Linear,
    pub attn_norm: LayerNorm,
    pub intermediate: Linear,
    pub output: Linear,
    pub out_norm: LayerNorm,
    pub heads: usize,
}

/// Dropout probabilities of one forward pass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropoutProbs {
    pub hidden: f64,
    pub attention: f64,
    /// The classification head's (`classifier_dropout`, DistilBERT's `seq_classif_dropout`,
    /// else `hidden`).
    pub head: f64,
}

/// The classification head on the first token: `dense` → activation → dropout → `out`, with
/// one more dropout before `dense` for RoBERTa.
pub(crate) struct Head {
    /// The pooler (or the family's dense layer); none in a token head.
    pub dense: Option<Linear>,
    pub out: Linear,
    pub activation: HeadActivation,
    pub dropout_first: bool,
}

impl EncoderLayer {
    /// `x`: `[batch, seq, hidden]`; `mask`: additive key mask `[batch, seq]`.
    pub fn forward(&self, x: &Tensor, mask: &Tensor, pass: Pass, p: DropoutProbs, dropout: &Dropout) -> Result<Tensor> {
        let h = x.dim(2)?;
        let d = h / self.heads;
        let drop = |prob: f64| if pass.train { dropout.mask(prob) } else { ops::DropMask::none() };
        // One projection for q, k and v (a [3h, h] weight built from the three HF tensors).
        let w_qkv = Tensor::cat(&[&pass.w(&self.query.weight)?, &pass.w(&self.key.weight)?, &pass.w(&self.value.weight)?], 0)?;
        let b_qkv = Tensor::cat(&[&pass.w(&self.query.bias)?, &pass.w(&self.key.bias)?, &pass.w(&self.value.bias)?], 0)?;
        let xw = linear::matmul_wt(x, &w_qkv)?;
        let ctx = attention::attention_qkv(&xw, &b_qkv, self.heads, mask, 1.0 / (d as f64).sqrt(), drop(p.attention))?;
        let a = ops::bias_dropout_residual(&self.attn_out.matmul(&ctx, pass)?, &pass.w(&self.attn_out.bias)?, x, drop(p.hidden))?;
        let a = self.attn_norm.forward(&a, pass)?;
        let i = ops::bias_gelu(&self.intermediate.matmul(&a, pass)?, &pass.w(&self.intermediate.bias)?)?;
        let o = ops::bias_dropout_residual(&self.output.matmul(&i, pass)?, &pass.w(&self.output.bias)?, &a, drop(p.hidden))?;
        self.out_norm.forward(&o, pass)
    }
}
