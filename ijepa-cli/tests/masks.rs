//! `ijepa-cli masks` end to end: the binary as a user runs it.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ijepa-cli"))
        .args(args)
        .output()
        .expect("ijepa-cli runs")
}

fn json(args: &[&str]) -> Value {
    let out = cli(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON object")
}

#[test]
fn official_compat_statistics_match_design() {
    let r = json(&["masks", "--json", "--official-compat", "--batches", "200"]);
    assert_eq!(r["grid"], "14x14");
    assert_eq!(r["targets_per_image"], 4);
    let mean = r["context_len"]["mean"].as_f64().unwrap();
    assert!((48.0..53.0).contains(&mean), "context mean {mean}");
    assert_eq!(r["target_len"]["min"], 30);
    assert_eq!(r["target_len"]["max"], 40);
    // The last row and column (27 of 196 positions) are never masked.
    let coverage = r["target_coverage"].as_f64().unwrap();
    assert!((coverage - 169.0 / 196.0).abs() < 1e-9, "{coverage}");
    assert!(r["sets_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn default_and_seed_recipes_cover_the_grid() {
    let r = json(&["masks", "--json", "--batches", "50"]);
    assert_eq!(r["target_coverage"], 1.0);
    assert_eq!(r["context_coverage"], 1.0);
    let s = json(&[
        "masks",
        "--json",
        "--recipe",
        "seed",
        "--grid",
        "16x16",
        "--batches",
        "20",
    ]);
    assert_eq!(s["recipe"], "seed");
    assert_eq!(s["targets_per_image"], 1);
    assert_eq!(s["grid"], "16x16");
}

#[test]
fn text_output_and_png() {
    let dir = std::env::temp_dir().join(format!("ijepa-cli-masks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png_path: PathBuf = dir.join("masks.png");
    let out = cli(&[
        "masks",
        "--grid",
        "2x8x8",
        "--batch",
        "3",
        "--batches",
        "2",
        "--png",
        png_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("2x8x8 grid: 2 batches of 3"), "{text}");
    assert!(text.contains("mask sets/s"), "{text}");

    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).unwrap(),
    ));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    // 3 images of 2 frames of 8×8 cells of 12 px, 24 px margins, 4 px between frames.
    assert_eq!(
        (info.width, info.height),
        (24 + 3 * (2 * 96 + 4 + 24), 2 * 24 + 96)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mask_settings_are_flags_and_lift_the_small_grid_refusal() {
    let r = json(&[
        "masks",
        "--grid",
        "3x3",
        "--min-keep",
        "0",
        "--target-scale",
        "0.2,0.3",
        "--num-targets",
        "2",
        "--batches",
        "3",
        "--json",
    ]);
    assert_eq!(r["targets_per_image"], 2);
    assert_eq!(
        r["target_len"]["max"], 2,
        "a 3x3 grid's largest block here has 2 patches"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    for (args, expected) in [
        (
            vec!["masks", "--grid", "14"],
            "cannot parse patch grid \"14\"",
        ),
        (vec!["masks", "--grid", "3x3"], "min_keep = 10"),
        // The advice names settings `masks` has.
        (
            vec!["masks", "--grid", "3x3"],
            "Raise target_scale or lower min_keep",
        ),
        (
            vec!["masks", "--batch", "0"],
            "--batch 0 is out of range: 1 to 65536",
        ),
        (
            vec!["masks", "--batch", "100000000"],
            "--batch 100000000 is out of range",
        ),
        (
            vec!["masks", "--num-targets", "99999"],
            "num_targets = 99999 is invalid: expected 1 to 64",
        ),
        (
            vec!["masks", "--recipe", "seed", "--min-keep", "4"],
            "--min-keep applies to --recipe official only",
        ),
        (vec!["masks", "--target-scale", "0.2"], "is not LO,HI"),
        (vec!["masks", "--png", "/"], "a folder"),
        (
            vec!["masks", "--recipe", "seed", "--official-compat"],
            "--official-compat applies to --recipe official only",
        ),
    ] {
        let out = cli(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
