//! Fingerprints of what a fine-tuning study's trials read: its data files (`[data] path`,
//! `valid_path`, `test_path`; every byte) and its pretrained model folder (`config.json`,
//! the tokenizer files, and `model.safetensors` sampled: its size, its first MiB, which holds
//! the header, and 4 KiB at 256 places), each a 64-bit FNV-1a hash, so that a study can tell
//! when the rows or the weights its recorded trials used have changed under the same names.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::{Map, Value};

use super::data::config::DataSection;
use super::data::error::DataError;

/// FNV-1a, 64 bits: stable across builds and platforms (unlike `std`'s hasher).
fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_from(0xcbf2_9ce4_8422_2325, bytes)
}

/// Folds `bytes` into a running FNV-1a hash.
fn fnv1a64_from(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// `{"path": "fnv1a64:…", "valid_path": …, "test_path": …}` for the files the section names.
pub fn data_files(section: &DataSection) -> Result<Value, DataError> {
    let mut m = Map::new();
    let files = [("path", Some(&section.path)), ("valid_path", section.valid_path.as_ref()), ("test_path", section.test_path.as_ref())];
    for (role, path) in files {
        if let Some(p) = path {
            let bytes = std::fs::read(p).map_err(|source| DataError::Io { path: p.clone(), source })?;
            m.insert(role.into(), Value::String(format!("fnv1a64:{:016x}", fnv1a64(&bytes))));
        }
    }
    Ok(Value::Object(m))
}

/// `model.safetensors` read at the places the module doc names, and its size.
fn sampled(path: &Path) -> std::io::Result<u64> {
    const HEAD: u64 = 1 << 20;
    const PIECE: u64 = 4096;
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let mut h = fnv1a64(&size.to_le_bytes());
    let mut buf = Vec::new();
    (&mut f).take(HEAD).read_to_end(&mut buf)?;
    h = fnv1a64_from(h, &buf);
    if size > HEAD {
        for i in 0..256u64 {
            let at = HEAD + (size - HEAD) * i / 256;
            f.seek(SeekFrom::Start(at))?;
            buf.clear();
            (&mut f).take(PIECE).read_to_end(&mut buf)?;
            h = fnv1a64_from(h, &buf);
        }
    }
    Ok(h)
}

/// The pretrained folder's fingerprint: one hash over the files a trial loads that are there.
pub fn model_folder(dir: &Path) -> std::io::Result<Value> {
    let mut h = fnv1a64(b"model");
    for name in ["config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "merges.txt", "vocab.json"] {
        match std::fs::read(dir.join(name)) {
            Ok(bytes) => h = fnv1a64_from(fnv1a64_from(h, name.as_bytes()), &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let weights = dir.join("model.safetensors");
    if weights.is_file() {
        h ^= sampled(&weights)?;
    }
    Ok(Value::String(format!("fnv1a64:{h:016x}")))
}

/// The roles whose file differs between two fingerprints (a role in only one counts).
pub fn changed_files(stored: &Value, now: &Value) -> Vec<String> {
    let (Some(a), Some(b)) = (stored.as_object(), now.as_object()) else { return Vec::new() };
    let mut roles: Vec<&String> = a.keys().collect();
    roles.extend(b.keys().filter(|k| !a.contains_key(*k)));
    roles.into_iter().filter(|r| a.get(*r) != b.get(*r)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_the_bytes_and_names_the_file_that_changed() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c, "the published FNV-1a test vector");
        let dir = tempfile::tempdir().unwrap();
        let (main, test) = (dir.path().join("a.csv"), dir.path().join("t.csv"));
        std::fs::write(&main, "text,label\nx,0\n").unwrap();
        std::fs::write(&test, "text,label\ny,1\n").unwrap();
        let mut s = DataSection::new(&main);
        s.test_path = Some(test.clone());
        let before = data_files(&s).unwrap();
        assert_eq!(before, data_files(&s).unwrap());
        assert!(changed_files(&before, &before).is_empty());
        std::fs::write(&test, "text,label\ny,0\n").unwrap();
        assert_eq!(changed_files(&before, &data_files(&s).unwrap()), vec!["test_path"]);
        s.test_path = None;
        assert_eq!(changed_files(&before, &data_files(&s).unwrap()), vec!["test_path"], "a file no longer used");
    }

    #[test]
    fn a_model_folder_changes_its_fingerprint_with_its_config_or_weights_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 32}").unwrap();
        let weights: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("model.safetensors"), &weights).unwrap();
        let a = model_folder(dir.path()).unwrap();
        assert_eq!(a, model_folder(dir.path()).unwrap());
        // Other weights of the same size and header (another fine-tune of the same model).
        let mut other = weights.clone();
        for b in other.iter_mut().skip(1 << 20) {
            *b = b.wrapping_add(1);
        }
        std::fs::write(dir.path().join("model.safetensors"), &other).unwrap();
        let b = model_folder(dir.path()).unwrap();
        assert_ne!(a, b);
        std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 64}").unwrap();
        assert_ne!(b, model_folder(dir.path()).unwrap());
    }
}
