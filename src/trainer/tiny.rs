//! Writes a tiny random encoder as a Hugging Face folder, for tests: a WordPiece tokenizer built
//! with the `tokenizers` crate from the words of the given texts (`tokenizer.json`, and
//! `vocab.txt` for BERT-style special tokens), a `config.json` with the family's own fields and
//! `model.safetensors` with random weights under HF names (no classifier). BERT, RoBERTa
//! (`<s>`/`</s>`/`<pad>` = 1, positions from 2, one token type), DistilBERT and ELECTRA
//! (embeddings half the hidden width, projected up). Runs in well under a second.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, TokenizerImpl,
};

use super::model::arch::Arch;

/// What [`write_tiny_bert`] produced.
#[derive(Debug, Clone)]
pub struct TinyBert {
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub max_position_embeddings: usize,
}

pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
/// RoBERTa's special tokens in its id order (`<s>` = 0, `<pad>` = 1, `</s>` = 2).
pub const ROBERTA_SPECIAL_TOKENS: [&str; 5] = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"];

/// A tiny BERT: [`write_tiny_model`] with [`Arch::Bert`].
pub fn write_tiny_bert(dir: &Path, texts: &[String], layers: usize, hidden: usize, seed: u64) -> anyhow::Result<TinyBert> {
    write_tiny_model(dir, Arch::Bert, texts, layers, hidden, seed)
}

/// Writes `tokenizer.json`, `config.json`, `model.safetensors` (and `vocab.txt` for all but
/// RoBERTa) into `dir`. `hidden` must be a multiple of 4 (4 attention heads).
pub fn write_tiny_model(dir: &Path, arch: Arch, texts: &[String], layers: usize, hidden: usize, seed: u64) -> anyhow::Result<TinyBert> {
    anyhow::ensure!(hidden >= 4 && hidden.is_multiple_of(4), "hidden {hidden} must be a positive multiple of 4");
    std::fs::create_dir_all(dir)?;
    let vocab_size = write_tokenizer(dir, arch, texts)?;

    // Config, in the family's own field names.
    let inter = hidden * 4;
    // ELECTRA's embeddings are half as wide as its hidden states, as in ELECTRA-small.
    let emb = if arch == Arch::Electra { hidden / 2 } else { hidden };
    let mut config = serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab_size,
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 4,
        "intermediate_size": inter, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 128, "type_vocab_size": 2,
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
    });
    // Each family's differences from BERT's config, as its own checkpoints write them.
    let (max_pos, changes) = match arch {
        Arch::Bert => (128, serde_json::json!({})),
        Arch::Roberta => (
            130,
            serde_json::json!({
                "architectures": ["RobertaModel"], "model_type": "roberta", "max_position_embeddings": 130,
                "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
            }),
        ),
        Arch::DistilBert => {
            config = serde_json::json!({
                "architectures": ["DistilBertModel"], "model_type": "distilbert", "vocab_size": vocab_size,
                "dim": hidden, "n_layers": layers, "n_heads": 4, "hidden_dim": inter, "activation": "gelu",
                "dropout": 0.1, "attention_dropout": 0.1, "seq_classif_dropout": 0.2,
                "max_position_embeddings": 128, "sinusoidal_pos_embds": false, "initializer_range": 0.02,
                "pad_token_id": 0,
            });
            (128, serde_json::json!({}))
        }
        Arch::Electra => (
            128,
            serde_json::json!({
                "architectures": ["ElectraForPreTraining"], "model_type": "electra", "embedding_size": emb,
            }),
        ),
    };
    if let (Some(c), Some(changes)) = (config.as_object_mut(), changes.as_object()) {
        c.extend(changes.clone());
    }
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config)?)?;

    // Weights.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 0.02)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut put = |name: String, shape: &[usize], kind: Init| -> anyhow::Result<()> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match kind {
            Init::Normal => (0..n).map(|_| normal.sample(&mut rng)).collect(),
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
        };
        tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
        Ok(())
    };
    let (word, position, token_type, norm) = arch.embedding_names();
    put(format!("{word}.weight"), &[vocab_size, emb], Init::Normal)?;
    put(format!("{position}.weight"), &[max_pos, emb], Init::Normal)?;
    if let Some(t) = token_type {
        put(format!("{t}.weight"), &[if arch == Arch::Roberta { 1 } else { 2 }, emb], Init::Normal)?;
    }
    put(format!("{norm}.weight"), &[emb], Init::Ones)?;
    put(format!("{norm}.bias"), &[emb], Init::Zeros)?;
    if emb != hidden {
        put(format!("{}.weight", arch.projection_name()), &[hidden, emb], Init::Normal)?;
        put(format!("{}.bias", arch.projection_name()), &[hidden], Init::Zeros)?;
    }
    for i in 0..layers {
        let n = arch.layer_names(i);
        for (name, out, inp) in [
            (&n.query, hidden, hidden),
            (&n.key, hidden, hidden),
            (&n.value, hidden, hidden),
            (&n.attn_out, hidden, hidden),
            (&n.intermediate, inter, hidden),
            (&n.output, hidden, inter),
        ] {
            put(format!("{name}.weight"), &[out, inp], Init::Normal)?;
            put(format!("{name}.bias"), &[out], Init::Zeros)?;
        }
        for name in [&n.attn_norm, &n.out_norm] {
            put(format!("{name}.weight"), &[hidden], Init::Ones)?;
            put(format!("{name}.bias"), &[hidden], Init::Zeros)?;
        }
    }
    if arch == Arch::Bert {
        // BERT checkpoints carry a pretrained pooler; the other heads start from scratch.
        put("bert.pooler.dense.weight".into(), &[hidden, hidden], Init::Normal)?;
        put("bert.pooler.dense.bias".into(), &[hidden], Init::Zeros)?;
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    Ok(TinyBert { vocab_size, hidden, layers, max_position_embeddings: max_pos })
}

/// Writes `tokenizer.json` (and `vocab.txt` for BERT-style specials) and returns the
/// vocabulary size.
///
/// A WordPiece vocabulary of the special tokens, every word of `texts` (as BERT's normaliser
/// and pre-tokeniser split them) and every character, alone and as a `##` continuation, so
/// unseen words still tokenise. Built directly rather than with `tokenizers`' trainer, whose
/// merges between pairs of equal count follow hash-map order and change from run to run; this
/// way one seed always writes the same files.
fn write_tokenizer(dir: &Path, arch: Arch, texts: &[String]) -> anyhow::Result<usize> {
    type Tok = TokenizerImpl<WordPiece, BertNormalizer, BertPreTokenizer, TemplateProcessing, tokenizers::decoders::wordpiece::WordPiece>;
    let special = if arch == Arch::Roberta { ROBERTA_SPECIAL_TOKENS } else { SPECIAL_TOKENS };
    let normalizer = BertNormalizer::new(true, true, None, true);
    let mut words = std::collections::BTreeSet::new();
    for text in texts {
        let mut normalized = NormalizedString::from(text.as_str());
        normalizer.normalize(&mut normalized).map_err(|e| anyhow::anyhow!("normalising {text:?}: {e}"))?;
        let mut pre = PreTokenizedString::from(normalized);
        BertPreTokenizer.pre_tokenize(&mut pre).map_err(|e| anyhow::anyhow!("pre-tokenising {text:?}: {e}"))?;
        for (word, _, _) in pre.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            words.insert(word.to_string());
        }
    }
    let chars: std::collections::BTreeSet<char> = words.iter().flat_map(|w| w.chars()).collect();
    let mut tokens = words;
    for c in &chars {
        tokens.insert(c.to_string());
        tokens.insert(format!("##{c}"));
    }
    let ordered: Vec<String> =
        special.iter().map(|t| t.to_string()).chain(tokens.into_iter().filter(|t| !special.contains(&t.as_str()))).collect();
    let unk = special[if arch == Arch::Roberta { 3 } else { 1 }];
    let vocab_txt = dir.join("vocab.txt");
    std::fs::write(&vocab_txt, ordered.join("\n") + "\n")?;
    let vocab_path = vocab_txt.to_str().ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", vocab_txt.display()))?;
    let model = WordPiece::from_file(vocab_path).unk_token(unk.into()).build().map_err(|e| anyhow::anyhow!("WordPiece: {e}"))?;
    let mut tok: Tok = TokenizerImpl::new(model);
    tok.with_normalizer(Some(normalizer));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
    tok.add_special_tokens(&special.iter().map(|t| AddedToken::from(*t, true)).collect::<Vec<_>>());
    let id = |t: &str| tok.token_to_id(t).ok_or_else(|| anyhow::anyhow!("special token {t} missing"));
    // BERT: `[CLS] A [SEP]`, pairs `[CLS] A [SEP] B [SEP]` with B of type 1; RoBERTa:
    // `<s> A </s>`, pairs `<s> A </s></s> B </s>`, every token of type 0.
    let (cls, sep, pair) =
        if arch == Arch::Roberta { ("<s>", "</s>", "<s> $A </s> </s> $B </s>") } else { ("[CLS]", "[SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1") };
    let template = TemplateProcessing::builder()
        .try_single(format!("{cls} $A {sep}"))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .try_pair(pair)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .special_tokens(vec![(cls, id(cls)?), (sep, id(sep)?)])
        .build()?;
    tok.with_post_processor(Some(template));
    tok.save(dir.join("tokenizer.json"), true).map_err(|e| anyhow::anyhow!("saving tokenizer.json: {e}"))?;
    if arch == Arch::Roberta {
        std::fs::remove_file(&vocab_txt)?; // RoBERTa folders carry no vocab.txt
    }
    Ok(ordered.len())
}

enum Init {
    Normal,
    Zeros,
    Ones,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The written folder is what a HF loader expects: tokenizer.json loads with the
    /// `tokenizers` crate and wraps texts as `[CLS] … [SEP]`, vocab.txt lists the vocabulary in
    /// id order, config.json parses as a BERT config with the vocabulary's size.
    #[test]
    fn writes_a_loadable_tokenizer_vocab_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let texts: Vec<String> = ["Good film, great fun", "bad film and awful fun"].iter().map(|s| s.to_string()).collect();
        let info = write_tiny_bert(dir.path(), &texts, 1, 8, 1).unwrap();
        let tok = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
        let enc = tok.encode("good film", true).unwrap();
        let ids = enc.get_ids();
        assert_eq!(ids.first(), Some(&2), "[CLS] first: {ids:?}");
        assert_eq!(ids.last(), Some(&3), "[SEP] last: {ids:?}");
        assert!(!ids[1..ids.len() - 1].contains(&1), "known words must not be [UNK]: {ids:?}");
        let pair = tok.encode(("good", "bad"), true).unwrap();
        assert_eq!(pair.get_type_ids().last(), Some(&1));
        let vocab = std::fs::read_to_string(dir.path().join("vocab.txt")).unwrap();
        let lines: Vec<&str> = vocab.lines().collect();
        assert_eq!(&lines[..5], &SPECIAL_TOKENS);
        assert_eq!(lines.len(), info.vocab_size);
        let cfg = crate::trainer::model::read_config(dir.path()).unwrap();
        assert_eq!((cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers), (info.vocab_size, 8, 1));
    }
}
