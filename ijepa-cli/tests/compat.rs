//! Runs of ijepa-rs 0.1 (checkpoint format v1, whose model section was a
//! name with `embed_dim`/`depth`/`num_heads` overrides) keep working: they
//! resume to how 0.1 itself would have finished them (within 1e-5 of each
//! tensor's scale: the kernels have changed their summation order since,
//! e.g. the column sums of bias gradients and the fused attention), and
//! embed as 0.1 did (within 1e-6 of each tensor's scale). `tests/fixtures/v1_run/make_v1_run.sh` made the
//! fixture with the 0.1 binary (commit 46b4b92).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1_run")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A writable copy of the 0.1 run.
fn v1_run(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ijepa-compat-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&fixture().join("run"), &dir);
    dir
}

fn cli(args: &[&str], out: &Path) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_ijepa-cli"))
        .args(args)
        .arg(out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn a_v1_run_resumes_to_what_v1_would_have_finished() {
    let run = v1_run("resume");
    let out = cli(
        &[
            "pretrain",
            "--resume",
            "--max-steps",
            "8",
            "--no-probe",
            "--out",
        ],
        &run,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        format!("{stdout}{stderr}").contains("ijepa-rs 0.1 model section"),
        "the upgrade is noted:\n{stdout}\n{stderr}"
    );
    let worst = support::assert_close_tensors(
        &run.join("checkpoints/step-00000008/model.safetensors"),
        &fixture().join("expected_step8_model.safetensors"),
        1e-5,
    );
    eprintln!("largest deviation from 0.1's step 8: {worst:e} of a tensor's scale");
    // The run's config.toml is now in the current form, and resumes again.
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let (model, args) = config.split_once("[model.args]").unwrap();
    assert!(!model.contains("\nembed_dim") && args.contains("\nembed_dim = 16"));
    cli(
        &[
            "pretrain",
            "--resume",
            "--max-steps",
            "8",
            "--no-probe",
            "--out",
        ],
        &run,
    );
    let _ = std::fs::remove_dir_all(&run);
}

#[test]
fn a_v1_checkpoint_embeds_as_v1_did() {
    let run = v1_run("embed");
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embed_images");
    let feats = run.join("feats.safetensors");
    let weights = run.to_string_lossy().into_owned();
    let images = images.to_string_lossy().into_owned();
    cli(
        &[
            "embed",
            "--weights",
            &weights,
            "--images",
            &images,
            "--tokens",
            "--out",
        ],
        &feats,
    );
    let worst =
        support::assert_close_tensors(&feats, &fixture().join("expected_embed.safetensors"), 1e-6);
    eprintln!("largest deviation from 0.1's features: {worst:e} of a tensor's scale");
    let _ = std::fs::remove_dir_all(&run);
}
