//! Tokenization: the model folder's `tokenizer.json`, or a BERT WordPiece tokenizer built
//! from `vocab.txt` when that is missing (lowercasing per `tokenizer_config.json`'s
//! `do_lower_case`, default true). Texts are truncated to `max_length` (pairs: longest first),
//! get `[CLS] … [SEP] (… [SEP])`, and are not padded here — batches pad to their own longest.

use std::path::{Path, PathBuf};

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{EncodeInput, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::error::DataError;
use super::{Example, Target, IGNORE_TAG};

/// One tokenized row, unpadded.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub label: Target,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer { path: path.to_path_buf(), message: e.to_string() }
}

/// Loads `dir/tokenizer.json`, or builds a BERT WordPiece tokenizer from `dir/vocab.txt`.
/// No truncation or padding is set; [`TextEncoder`] sets its own.
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer, DataError> {
    let tj = dir.join("tokenizer.json");
    if tj.is_file() {
        return Tokenizer::from_file(&tj).map_err(|e| tok_err(&tj, e));
    }
    let vocab = dir.join("vocab.txt");
    if !vocab.is_file() {
        return Err(tok_err(dir, "neither tokenizer.json nor vocab.txt is in the model folder"));
    }
    let lowercase = read_do_lower_case(&dir.join("tokenizer_config.json"))?;
    let vocab_str = vocab.to_str().ok_or_else(|| tok_err(&vocab, "path is not UTF-8"))?;
    let wp = WordPiece::from_file(vocab_str).unk_token("[UNK]".into()).build().map_err(|e| tok_err(&vocab, e))?;
    let id = |t: &str| wp_token_id(&wp, t).ok_or_else(|| tok_err(&vocab, format!("vocab.txt has no `{t}` token")));
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    id("[UNK]")?;
    let mut tok = Tokenizer::new(wp);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
    tok.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
    Ok(tok)
}

fn wp_token_id(wp: &WordPiece, t: &str) -> Option<u32> {
    use tokenizers::Model;
    wp.token_to_id(t)
}

fn read_do_lower_case(path: &Path) -> Result<bool, DataError> {
    if !path.is_file() {
        return Ok(true);
    }
    let s = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let v: serde_json::Value = serde_json::from_str(&s).map_err(|e| tok_err(path, e))?;
    Ok(v.get("do_lower_case").and_then(|b| b.as_bool()).unwrap_or(true))
}

/// A tokenizer set up for one `max_length`: encodes examples once per split.
#[derive(Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    max_length: usize,
    pad_id: u32,
    source: PathBuf,
}

impl TextEncoder {
    /// Loads the model folder's tokenizer ([`load_tokenizer`]).
    pub fn from_model_dir(dir: &Path, max_length: usize) -> Result<Self, DataError> {
        Self::new(load_tokenizer(dir)?, max_length, dir)
    }

    /// Wraps a tokenizer; `source` only names it in errors. `max_length` counts special tokens
    /// and must leave room for them (at least 4).
    pub fn new(mut tokenizer: Tokenizer, max_length: usize, source: &Path) -> Result<Self, DataError> {
        if max_length < 4 {
            return Err(DataError::Config(format!("max_length must be at least 4, got {max_length}")));
        }
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| tok_err(source, e))?;
        tokenizer.with_padding(None);
        let pad_id = tokenizer.token_to_id("[PAD]").or_else(|| tokenizer.token_to_id("<pad>")).unwrap_or(0);
        Ok(TextEncoder { tokenizer, max_length, pad_id, source: source.to_path_buf() })
    }

    /// The id batches pad with (`[PAD]`, else `<pad>`, else 0).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Tokenizes every example (in parallel where the tokenizer allows), in order.
    ///
    /// Token classification rows ([`Target::Tags`]) are encoded as their words (pre-tokenized,
    /// so a word is never merged with its neighbour), and their tags are aligned to the tokens:
    /// each word's tag on its first token, [`IGNORE_TAG`] on its other tokens and on the special
    /// tokens, as Hugging Face's token-classification examples do. Words cut by `max_length`
    /// lose their tags (they are neither trained nor scored).
    pub fn encode(&self, examples: &[Example]) -> Result<Vec<Encoded>, DataError> {
        let inputs: Vec<EncodeInput> = examples
            .iter()
            .map(|e| match (&e.label, &e.text_pair) {
                (Target::Tags(_), _) => EncodeInput::Single(e.text.split(' ').collect::<Vec<&str>>().into()),
                (_, Some(p)) => EncodeInput::Dual(e.text.as_str().into(), p.as_str().into()),
                (_, None) => EncodeInput::Single(e.text.as_str().into()),
            })
            .collect();
        let encs = self.tokenizer.encode_batch(inputs, true).map_err(|e| DataError::Encode(format!("{}: {e}", self.source.display())))?;
        Ok(encs
            .into_iter()
            .zip(examples)
            .map(|(enc, ex)| {
                let label = match &ex.label {
                    Target::Tags(tags) => Target::Tags(align_tags(enc.get_word_ids(), tags)),
                    other => other.clone(),
                };
                Encoded { ids: enc.get_ids().to_vec(), type_ids: enc.get_type_ids().to_vec(), label }
            })
            .collect())
    }
}

/// One tag per token from one tag per word (see [`TextEncoder::encode`]).
pub fn align_tags(word_ids: &[Option<u32>], word_tags: &[u32]) -> Vec<u32> {
    let mut previous = None;
    word_ids
        .iter()
        .map(|w| {
            let tag = match *w {
                Some(w) if previous != Some(w) => word_tags.get(w as usize).copied().unwrap_or(IGNORE_TAG),
                _ => IGNORE_TAG,
            };
            if w.is_some() {
                previous = *w;
            }
            tag
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn vocab_dir(lower: Option<bool>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ngood\nbad\nfilm\nvery\n##s\n.\nis\nGood\n";
        std::fs::write(dir.path().join("vocab.txt"), vocab).unwrap();
        if let Some(l) = lower {
            std::fs::write(dir.path().join("tokenizer_config.json"), format!("{{\"do_lower_case\": {l}}}")).unwrap();
        }
        dir
    }

    fn ex(t: &str, p: Option<&str>) -> Example {
        Example { text: t.into(), text_pair: p.map(String::from), label: Target::Class(1) }
    }

    #[test]
    fn vocab_txt_tokenizer_works() {
        let dir = vocab_dir(None);
        let enc = TextEncoder::from_model_dir(dir.path(), 16).unwrap();
        assert_eq!(enc.pad_id(), 0);
        let out = enc.encode(&[ex("The GOOD films.", None), ex("very bad", Some("good film"))]).unwrap();
        // [CLS] the good film ##s . [SEP]
        assert_eq!(out[0].ids, vec![2, 5, 6, 8, 10, 11, 3]);
        assert_eq!(out[0].type_ids, vec![0; 7]);
        // [CLS] very bad [SEP] good film [SEP]
        assert_eq!(out[1].ids, vec![2, 9, 7, 3, 6, 8, 3]);
        assert_eq!(out[1].type_ids, vec![0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(out[1].label, Target::Class(1));
    }

    #[test]
    fn tags_go_to_the_first_token_of_each_word() {
        let dir = vocab_dir(None);
        let enc = TextEncoder::from_model_dir(dir.path(), 16).unwrap();
        let row = Example { text: "very good films .".into(), text_pair: None, label: Target::Tags(vec![0, 1, 2, 0]) };
        let out = enc.encode(&[row]).unwrap();
        // [CLS] very good film ##s . [SEP]
        assert_eq!(out[0].ids, vec![2, 9, 6, 8, 10, 11, 3]);
        let i = IGNORE_TAG;
        assert_eq!(out[0].label, Target::Tags(vec![i, 0, 1, 2, i, 0, i]));
        // Cut to 5 tokens: "." and the second piece of "films" are gone, and "." loses its tag.
        let enc = TextEncoder::from_model_dir(dir.path(), 5).unwrap();
        let row = Example { text: "very good films .".into(), text_pair: None, label: Target::Tags(vec![0, 1, 2, 0]) };
        assert_eq!(enc.encode(&[row]).unwrap()[0].label, Target::Tags(vec![i, 0, 1, 2, i]));
    }

    #[test]
    fn do_lower_case_false_is_respected() {
        let dir = vocab_dir(Some(false));
        let enc = TextEncoder::from_model_dir(dir.path(), 16).unwrap();
        let out = enc.encode(&[ex("Good good", None)]).unwrap();
        assert_eq!(out[0].ids, vec![2, 13, 6, 3]);
    }

    #[test]
    fn truncation_longest_first_keeps_special_tokens() {
        let dir = vocab_dir(None);
        let enc = TextEncoder::from_model_dir(dir.path(), 6).unwrap();
        let out = enc.encode(&[ex("good good good good good good", None), ex("good good good good", Some("bad"))]).unwrap();
        assert_eq!(out[0].ids, vec![2, 6, 6, 6, 6, 3]);
        // 6 = [CLS] a a [SEP] b [SEP]: the longer text was cut.
        assert_eq!(out[1].ids, vec![2, 6, 6, 3, 7, 3]);
    }

    #[test]
    fn tokenizer_json_is_preferred_and_matches_vocab_txt() {
        let dir = vocab_dir(None);
        let from_vocab = TextEncoder::from_model_dir(dir.path(), 16).unwrap();
        // Save with padding and a short truncation, which the encoder must override.
        let mut tok = load_tokenizer(dir.path()).unwrap();
        tok.with_padding(Some(tokenizers::PaddingParams::default()));
        tok.with_truncation(Some(TruncationParams { max_length: 3, ..Default::default() })).unwrap();
        let json_dir = tempfile::tempdir().unwrap();
        tok.save(json_dir.path().join("tokenizer.json"), false).unwrap();
        let from_json = TextEncoder::from_model_dir(json_dir.path(), 16).unwrap();
        let rows = [ex("the good film .", None), ex("very very bad films", Some("the film"))];
        let a = from_vocab.encode(&rows).unwrap();
        let b = from_json.encode(&rows).unwrap();
        assert_eq!(a, b);
        assert_eq!(b[0].ids.len(), 6, "not padded, not cut to 3");
    }

    /// Real-model check: `SFT_MINILM_DIR=/work/minilm cargo test --lib -- --ignored minilm`.
    #[test]
    #[ignore]
    fn minilm_tokenizer_json_and_vocab_agree() {
        let dir = std::path::PathBuf::from(std::env::var("SFT_MINILM_DIR").expect("set SFT_MINILM_DIR"));
        let json = TextEncoder::from_model_dir(&dir, 64).unwrap();
        let vocab_only = tempfile::tempdir().unwrap();
        for f in ["vocab.txt", "tokenizer_config.json"] {
            std::fs::copy(dir.join(f), vocab_only.path().join(f)).unwrap();
        }
        let vocab = TextEncoder::from_model_dir(vocab_only.path(), 64).unwrap();
        let rows = [
            ex("The café's crème brûlée wasn't THAT great, honestly!", None),
            ex("one long string of cliches .", Some("a second, paired sentence")),
        ];
        let (a, b) = (json.encode(&rows).unwrap(), vocab.encode(&rows).unwrap());
        assert_eq!(a, b);
        assert_eq!(a[0].ids[0], 101, "[CLS]");
        assert_eq!(json.pad_id(), 0);
    }

    #[test]
    fn missing_tokenizer_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = TextEncoder::from_model_dir(dir.path(), 16).err().unwrap();
        assert!(e.to_string().contains("neither tokenizer.json nor vocab.txt"), "{e}");
    }
}
