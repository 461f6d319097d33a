//! With the `cuda` feature, compiles `src/kernels/cuda/layers.cu` to PTX
//! (`$OUT_DIR/layers.ptx`) with the nvcc that builds candle's own kernels:
//! `$CUDA_HOME/bin/nvcc`, else `nvcc` on the PATH; for `CUDA_COMPUTE_CAP`
//! (default 80, the first with bf16; the driver compiles PTX for newer GPUs).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=src/kernels/cuda");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=CUDA_HOME");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = std::env::var_os("CUDA_HOME")
        .map(|home| PathBuf::from(home).join("bin").join("nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let status = Command::new(&nvcc)
        .args([
            "--ptx",
            "-O3",
            "-std=c++17",
            &format!("-arch=compute_{cap}"),
        ])
        .arg("src/kernels/cuda/layers.cu")
        .arg("-o")
        .arg(out.join("layers.ptx"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "{} failed on src/kernels/cuda/layers.cu ({s})",
            nvcc.display()
        ),
        Err(e) => panic!(
            "cannot run {} (the cuda feature needs nvcc): {e}",
            nvcc.display()
        ),
    }
}
