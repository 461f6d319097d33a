//! With the `cuda` feature, compiles `src/kernels/cuda/optim.cu` to PTX
//! (`$OUT_DIR/optim.ptx`), as ijepa-encoder's build script compiles its
//! layer kernels: `$CUDA_HOME/bin/nvcc` (else `nvcc` on the PATH), for
//! `CUDA_COMPUTE_CAP` (default 80).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=src/kernels/cuda");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=CUDA_HOME");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let home = std::env::var_os("CUDA_HOME").map(PathBuf::from);
    let nvcc = home
        .map(|h| h.join("bin/nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "nvcc".into());
    let arch = format!(
        "-arch=compute_{}",
        std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into())
    );
    let ptx =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("optim.ptx");
    let source = "src/kernels/cuda/optim.cu";
    match Command::new(&nvcc)
        .args(["--ptx", "-O3", &arch, source, "-o"])
        .arg(&ptx)
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{} failed on {source} ({s})", nvcc.display()),
        Err(e) => panic!(
            "cannot run {} (the cuda feature needs nvcc): {e}",
            nvcc.display()
        ),
    }
}
