//! A fingerprint of a study's data files (`[data] path`, `valid_path`, `test_path`): a 64-bit
//! FNV-1a hash of each file's bytes, so that a study can tell when the rows its recorded
//! trials trained and were measured on have changed under the same file names.

use serde_json::{Map, Value};

use super::config::DataSection;
use super::error::DataError;

/// FNV-1a, 64 bits: stable across builds and platforms (unlike `std`'s hasher).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// `{"path": "fnv1a64:…", "valid_path": …, "test_path": …}` for the files the section names.
pub fn fingerprint(section: &DataSection) -> Result<Value, DataError> {
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
        let before = fingerprint(&s).unwrap();
        assert_eq!(before, fingerprint(&s).unwrap());
        assert!(changed_files(&before, &before).is_empty());
        std::fs::write(&test, "text,label\ny,0\n").unwrap();
        assert_eq!(changed_files(&before, &fingerprint(&s).unwrap()), vec!["test_path"]);
        s.test_path = None;
        assert_eq!(changed_files(&before, &fingerprint(&s).unwrap()), vec!["test_path"], "a file no longer used");
    }
}
