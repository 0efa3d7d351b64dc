//! Build script: with the `cuda` feature, compiles the fused training kernels
//! (`src/trainer/model/cuda/kernels.cu`) to PTX with nvcc, for `trainer::model::cuda` to embed.
//! nvcc is `$NVCC`, else `$CUDA_HOME/bin/nvcc`, else `nvcc` on the PATH; the PTX targets
//! `compute_$CUDA_COMPUTE_CAP` (default 80: Ampere and newer GPUs; the driver compiles the PTX
//! for the card at load). Without the feature it does nothing.

use std::path::PathBuf;
use std::process::Command;

const SRC: &str = "src/trainer/model/cuda/kernels.cu";

fn main() {
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = std::env::var_os("NVCC").map(PathBuf::from).unwrap_or_else(|| match std::env::var_os("CUDA_HOME") {
        Some(home) => PathBuf::from(home).join("bin").join("nvcc"),
        None => PathBuf::from("nvcc"),
    });
    let cap = std::env::var("CUDA_COMPUTE_CAP")
        .ok()
        .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit()))
        .unwrap_or_else(|| "80".into());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("sft_kernels.ptx");
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17", &format!("--gpu-architecture=compute_{cap}"), "-o"])
        .arg(&out)
        .arg(SRC)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{} failed ({s}) compiling {SRC}", nvcc.display()),
        Err(e) => panic!("cannot run {} to compile {SRC}: {e} (set NVCC or CUDA_HOME; see README, GPUs)", nvcc.display()),
    }
}
