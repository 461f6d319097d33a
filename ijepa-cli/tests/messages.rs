//! What the CLI says when something is wrong: the right cause, once, before
//! any long work, never a panic and never a wrong number with exit 0.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ijepa-cli"))
        .args(args)
        .output()
        .expect("ijepa-cli runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails with one `error:` line containing every `needle`, and no panic.
fn refused(out: &Output, needles: &[&str]) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "accepted:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in:\n{err}");
    }
    err
}

fn weights() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ijepa-encoder/tests/fixtures/timm_gap")
        .display()
        .to_string()
}

/// A labelled folder (two classes) of a few PNGs.
fn labelled(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("ijepa-msg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embed_images");
    for class in ["a", "b"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for f in ["img2.png", "img3.png"] {
            std::fs::copy(images.join(f), root.join(class).join(f)).unwrap();
        }
    }
    root
}

#[test]
fn probe_settings_that_give_wrong_numbers_are_refused_before_any_feature() {
    let data = labelled("probe");
    let d = data.to_str().unwrap();
    let w = weights();
    for (flags, needle) in [
        (
            vec!["--temperature", "0"],
            "temperature 0 must be a finite number > 0",
        ),
        (
            vec!["--temperature", "nan"],
            "temperature NaN must be a finite number > 0",
        ),
        (vec!["--linear-steps", "0"], "steps must be at least 1"),
        (vec!["--k", "0"], "k must be at least 1"),
        (
            vec!["--last-layers", "0"],
            "the last 0 blocks were asked for; this encoder has 2",
        ),
        (vec!["--last-layers", "9"], "ask for 1 to 2"),
        (vec!["--image-size", "100002"], "at most 16384"),
        (vec!["--batch-size", "0"], "--batch-size 0 is out of range"),
    ] {
        let mut args = vec!["probe", "--weights", &w, "--train", d, "--val", d];
        args.extend(&flags);
        let err = refused(&cli(&args), &[needle]);
        assert!(
            !err.contains("features of"),
            "{flags:?}: features were computed first"
        );
        assert!(!err.contains("invalid encoder configuration"), "{err}");
    }
    for (flags, needle) in [
        (
            vec!["--weights", "pixels"],
            "--weights pixels needs --image-size",
        ),
        (
            vec![
                "--weights",
                "pixels",
                "--image-size",
                "8",
                "--last-layers",
                "2",
            ],
            "--weights pixels has none",
        ),
        (
            vec!["--weights", &w, "--crop-pct", "1.5"],
            "--crop-pct: invalid image transform: crop_pct 1.5 must be in (0, 1]",
        ),
        (
            vec!["--weights", &w, "--resize", "0"],
            "resize 0 must be 1 to 8192",
        ),
        (
            vec!["--weights", &w, "--resize", "9", "--crop-pct", "1"],
            "cannot be used with",
        ),
    ] {
        let mut args = vec!["probe", "--train", d, "--val", d];
        args.extend(&flags);
        let err = refused(&cli(&args), &[needle]);
        assert!(!err.contains("features of"), "{flags:?}: {err}");
    }
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn embed_refuses_absurd_sizes_at_once() {
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embed_images");
    let out = std::env::temp_dir().join("ijepa-msg-never-written.safetensors");
    let (i, o, w) = (images.to_str().unwrap(), out.to_str().unwrap(), weights());
    refused(
        &cli(&[
            "embed",
            "--weights",
            &w,
            "--images",
            i,
            "--out",
            o,
            "--image-size",
            "100002",
        ]),
        &["--image-size 100002", "7143x7143", "at most 16384"],
    );
    refused(
        &cli(&[
            "embed",
            "--weights",
            &w,
            "--images",
            i,
            "--out",
            o,
            "--batch-size",
            "100000",
        ]),
        &["--batch-size 100000 is out of range: 1 to 4096"],
    );
    assert!(!out.exists());
}

#[test]
fn pretrain_configuration_errors_name_their_cause_once() {
    // A missing file: the OS error once, with the path.
    let err = refused(
        &cli(&["pretrain", "--config", "/nonexistent/run.toml"]),
        &[
            "/nonexistent/run.toml",
            "No such file or directory (os error 2)",
        ],
    );
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // Absurd sizes.
    for (set, needle) in [
        (
            "data.workers=100000",
            "data.workers = 100000 is out of range: 0 (one per core) to 256",
        ),
        (
            "mask.num_targets=99999",
            "num_targets = 99999 is invalid: expected 1 to 64",
        ),
        (
            "data.batch_size=100000000",
            "data.batch_size = 100000000 is out of range",
        ),
    ] {
        let err = refused(&cli(&["pretrain", "--set", set]), &[needle]);
        // Refused runs are not announced as saved.
        assert!(!err.contains("saved as"), "{err}");
    }
    // --print-config validates what it prints.
    refused(
        &cli(&["pretrain", "--print-config", "--set", "data.batch_size=0"]),
        &["data.batch_size = 0 is out of range"],
    );
    // `key=` restores the default, as the README says.
    let out = cli(&[
        "pretrain",
        "--print-config",
        "--set",
        "optim.lr=5",
        "--set",
        "optim.lr=",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let toml = String::from_utf8_lossy(&out.stdout);
    assert!(toml.contains("lr = 0.00015"), "{toml}");
}

#[test]
fn a_path_toml_cannot_hold_is_an_error_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"/tmp/ijepa-\xff-data");
    let out = Command::new(env!("CARGO_BIN_EXE_ijepa-cli"))
        .args(["pretrain", "--data"])
        .arg(bad)
        .output()
        .unwrap();
    refused(&out, &["data.path", "is not valid UTF-8"]);
}

#[test]
fn resuming_with_another_model_says_so() {
    let run = std::env::temp_dir().join(format!("ijepa-msg-{}-resume", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    let r = run.to_str().unwrap();
    let run_args = [
        "--set",
        "data.synthetic_images=8",
        "--batch-size",
        "4",
        "--max-steps",
        "1",
        "--no-probe",
    ];
    let out = cli(&[&["pretrain", "--out", r], support::TINY_MODEL, &run_args].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let err = refused(
        &cli(&["pretrain", "--out", r, "--resume", "--model", "vit_small_patch16_224"]),
        &[
            "model.name: the run has \"vit_tiny_patch16_224\", this command has \"vit_small_patch16_224\"",
            "model.args: the run has",
        ],
    );
    assert!(!err.contains("predictor width"), "{err}");
    // A resume with nothing left to train keeps the run's own settings.
    let before = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let out = cli(&[
        "pretrain",
        "--out",
        r,
        "--resume",
        "--epochs",
        "9",
        "--max-steps",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to train"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(run.join("config.toml")).unwrap(),
        before
    );
    std::fs::remove_dir_all(&run).unwrap();
}

#[test]
fn integers_toml_cannot_hold_are_refused_with_their_range() {
    for flag in ["--seed", "--max-steps"] {
        refused(
            &cli(&["pretrain", flag, "18446744073709551615", "--print-config"]),
            &["18446744073709551615", "9223372036854775807"],
        );
    }
}

#[test]
fn sizes_beyond_the_bounds_are_refused_with_the_range() {
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embed_images");
    let out = std::env::temp_dir().join("ijepa-msg-never-written-2.safetensors");
    let (i, o, w) = (images.to_str().unwrap(), out.to_str().unwrap(), weights());
    let embed = |flag: &str, value: &str| {
        cli(&[
            "embed",
            "--weights",
            &w,
            "--images",
            i,
            "--out",
            o,
            flag,
            value,
        ])
    };
    refused(
        &embed("--crop-pct", "1e-9"),
        &["8192 px", "crop_pct must be at least"],
    );
    refused(
        &embed("--resize", "30000"),
        &["resize 30000 must be 1 to 8192"],
    );
    assert!(!out.exists());
}

#[cfg(not(feature = "mpi"))]
#[test]
fn one_of_several_launched_processes_without_mpi_is_refused() {
    // As mpirun -np 2 would start a build without the `mpi` feature: each
    // process would train alone on the same run directory.
    let out = Command::new(env!("CARGO_BIN_EXE_ijepa-cli"))
        .args(["pretrain", "--max-steps", "1", "--no-probe"])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    refused(
        &out,
        &["one of 2 (OMPI_COMM_WORLD_SIZE=2)", "--features mpi"],
    );
}

#[test]
fn a_device_is_named_in_its_error_and_never_replaced_by_the_cpu() {
    let out_dir = std::env::temp_dir().join(format!("ijepa-msg-{}-device", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let emb = out_dir.join("e.safetensors");
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embed_images");
    let (w, i, e) = (
        weights(),
        images.display().to_string(),
        emb.display().to_string(),
    );
    let embed = |device: &str| {
        cli(&[
            "embed",
            "--weights",
            &w,
            "--images",
            &i,
            "--out",
            &e,
            "--device",
            device,
        ])
    };
    refused(&embed("gpu"), &["\"gpu\"", "\"cuda:N\""]);
    refused(&embed("cuda:x"), &["\"cuda:x\"", "GPU number"]);
    let run = out_dir.join("run");
    let r = run.display().to_string();
    let pretrain = cli(&[
        "pretrain",
        "--out",
        &r,
        "--max-steps",
        "1",
        "--no-probe",
        "--device",
        "cuda:7",
    ]);
    if cfg!(feature = "cuda") {
        // A CUDA build on a machine without GPU 7 names it too.
        refused(&pretrain, &["cuda:7"]);
    } else {
        refused(&pretrain, &["device cuda:7", "--features cuda"]);
        refused(&embed("cuda"), &["device cuda:0", "--features cuda"]);
    }
    assert!(!emb.exists(), "nothing written for a refused device");
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn bf16_autocast_on_the_cpu_stays_within_the_gpu_tolerance_of_f32() {
    // bench/gpu.sh's parity check, on the CPU: the same step at bf16
    // against f32, every gradient within 2e-2 of its scale.
    let out = cli(&[
        "bench",
        "parity",
        "--device",
        "cpu",
        "--precision",
        "bf16",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["tensors"], 60, "{report}");
    let worst = report["worst"]["relative"].as_f64().unwrap();
    assert!(worst > 1e-4 && worst < 2e-2, "{report}");
}

#[test]
fn a_mask_setting_that_can_never_be_sampled_is_said_once() {
    let run = std::env::temp_dir().join(format!("ijepa-msg-{}-mask", std::process::id()));
    let r = run.display().to_string();
    let out = cli(&[
        "pretrain",
        "--out",
        &r,
        "--max-steps",
        "1",
        "--no-probe",
        "--set",
        "mask.min_keep=80",
    ]);
    let err = refused(&out, &["min_keep = 80", "lower min_keep"]);
    assert_eq!(err.matches("sampling could never keep").count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&run);
}
