//! Every study file the repository ships passes `run --dry-run`: it parses, its paths and
//! environment variables resolve, a fine-tuning study's data loads and splits and its model
//! is found (a tiny model stands in for all-MiniLM-L6-v2, as a folder and as the Hub cache),
//! and nothing is written.

use std::path::{Path, PathBuf};
use std::process::Command;

use sft_search::trainer::toy::write_toy_task;

use crate::util::*;

fn study_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read studies/").flatten() {
        let p = e.path();
        if p.is_dir() && p.extension().is_none_or(|x| x != "trials") {
            study_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

/// Every path under `dir`, to see that nothing was written.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path());
        }
    }
    out.sort();
    out
}

#[test]
fn every_shipped_study_file_passes_a_dry_run_and_writes_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared");
    let tmp = tempfile::tempdir().unwrap();
    let toy = write_toy_task(&tmp.path().join("toy"), 40, 3).unwrap();
    // The quick start's Hub id, laid out in a Hub cache as `get-minilm.sh --hf-cache` does.
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let repo = tmp.path().join("hf/hub/models--sentence-transformers--all-MiniLM-L6-v2");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    let snap = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(&snap).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(toy.model_dir.join(f), snap.join(f)).unwrap();
    }
    let have_shared = shared.join("data/wnut17").is_dir();
    let types = tmp.path().join("wnut17-types");
    if have_shared {
        let out = Command::new("python3")
            .arg(root.join("scripts/wnut17_types.py"))
            .args(["--data".as_ref(), shared.join("data/wnut17").as_os_str(), "--out".as_ref(), types.as_os_str()])
            .output()
            .expect("python3");
        assert!(out.status.success(), "wnut17_types.py: {}", String::from_utf8_lossy(&out.stderr));
    } else {
        eprintln!("note: {} is missing: the studies that read it are skipped", shared.display());
    }

    let mut files = Vec::new();
    study_files(&root.join("studies"), &mut files);
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    let before = listing(&root.join("studies"));
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if (text.contains("${SFT_SHARED}") || text.contains("${SFT_WNUT_TYPES}")) && !have_shared {
            continue;
        }
        let out = Command::new(bin())
            .args(["run".as_ref(), f.as_os_str(), "--dry-run".as_ref()])
            .current_dir(root)
            .env("SFT_SHARED", &shared)
            .env("SFT_MINILM", &toy.model_dir)
            .env("SFT_WNUT_TYPES", &types)
            .env("HF_HOME", tmp.path().join("hf"))
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .expect("run sft-search");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {}", f.display(), stderr(&out));
        assert!(stdout.contains("the study file is valid; nothing was run or written"), "{}: {stdout}", f.display());
    }
    assert_eq!(listing(&root.join("studies")), before, "a dry run wrote something under studies/");
}
