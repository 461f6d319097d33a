//! `download` against a local stand-in for the Hub, and `inspect` on every
//! layout we load (timm, Hugging Face, official, ijepa-rs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../../ijepa-encoder/tests/support/hub_server.rs"]
mod hub_server;
use crate::support;

/// The stand-in hub repository: the timm_gap fixture under the name of the
/// pretrained weights `vit_huge_patch14_gap_224` defaults to.
const REPO: &str = "timm/vit_huge_patch14_gap_224.in1k_ijepa";

fn encoder_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ijepa-encoder/tests/fixtures")
        .join(name)
}

fn cli(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ijepa-cli"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("ijepa-cli runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn download_fills_the_cache_that_inspect_then_reads_offline() {
    let cache = std::env::temp_dir().join(format!("ijepa-cli-hub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let files: HashMap<String, Vec<u8>> = ["config.json", "model.safetensors"]
        .iter()
        .map(|f| {
            (
                f.to_string(),
                std::fs::read(encoder_fixture("timm_gap").join(f)).unwrap(),
            )
        })
        .collect();
    let (endpoint, server) = hub_server::serve(REPO, files, 5);
    let out = Command::new(env!("CARGO_BIN_EXE_ijepa-cli"))
        .args(["download", REPO, "--revision", "main"])
        .env("HF_ENDPOINT", &endpoint)
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    let snapshot = PathBuf::from(stdout(&out).trim());
    server.join().unwrap();
    assert_eq!(
        snapshot,
        cache
            .join("models--timm--vit_huge_patch14_gap_224.in1k_ijepa/snapshots")
            .join(hub_server::COMMIT)
    );
    for f in ["config.json", "model.safetensors"] {
        assert_eq!(
            std::fs::read(snapshot.join(f)).unwrap(),
            std::fs::read(encoder_fixture("timm_gap").join(f)).unwrap()
        );
    }
    // Offline, from the cache only (the server is gone).
    let out = cli(
        &["inspect", &format!("hf-hub:{REPO}"), "--json"],
        &[("HF_HUB_CACHE", &cache), ("HF_HUB_OFFLINE", Path::new("1"))],
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["layout"], "timm");
    // Pretraining starts from it offline: by name (`--init hf-hub:…`, the
    // architecture from its config.json) and as the seed's `pretrained=True`
    // (`model.pretrained`: the name's default tag, `.in1k_ijepa`).
    let offline = [
        ("HF_HUB_CACHE", cache.as_path()),
        ("HF_HUB_OFFLINE", Path::new("1")),
    ];
    let file = candle_core::safetensors::load(
        encoder_fixture("timm_gap").join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let small = support::INIT_RUN;
    let init = format!("hf-hub:{REPO}");
    let by_name: Vec<&str> = [&["--init", init.as_str()][..], small].concat();
    let pretrained: Vec<&str> = [
        &[
            "--model",
            "vit_huge_patch14_gap_224",
            "--set",
            "model.pretrained=true",
            "--set",
            "model.args.img_size=56",
            "--set",
            "model.args.embed_dim=48",
            "--set",
            "model.args.depth=2",
            "--set",
            "model.args.num_heads=3",
        ][..],
        small,
    ]
    .concat();
    for (what, args) in [("--init hf-hub", by_name), ("model.pretrained", pretrained)] {
        let run = cache.join(format!("run-{}", what.len()));
        let mut full = vec!["pretrain", "--out", run.to_str().unwrap()];
        full.extend(args);
        let out = cli(&full, &offline);
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ck = run.join("checkpoints/step-00000000/model.safetensors");
        let saved = candle_core::safetensors::load(&ck, &candle_core::Device::Cpu).unwrap();
        for (name, t) in &file {
            for part in ["encoder", "target_encoder"] {
                let ours = &saved[&format!("{part}.{name}")];
                let same = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                    == t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert!(same, "{what}: {part}.{name} is not the hub file's");
            }
        }
    }
    // An unknown repository is an error naming it.
    let out = cli(
        &["download", "test-org/missing"],
        &[("HF_HUB_CACHE", &cache), ("HF_HUB_OFFLINE", Path::new("1"))],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("test-org/missing"));
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn inspect_reports_every_layout() {
    for (fixture, extra, layout, params) in [
        ("timm_gap", vec![], "timm", 85_680),
        ("hf_ijepa", vec![], "hf", 66_672),
        ("hf_ijepa_v4", vec![], "hf", 66_672),
        (
            "official/official.pth.tar",
            vec!["--model", "vit_tiny_patch16_224", "--encoder", "context"],
            "official",
            0,
        ),
    ] {
        let path = encoder_fixture(fixture);
        let mut args = vec![
            "inspect",
            path.to_str().unwrap(),
            "--json",
            "--tensors",
            "100",
        ];
        args.extend(extra);
        let out = cli(&args, &[]);
        let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(r["layout"], layout, "{fixture}");
        let total = r["encoder"]["parameters"].as_u64().unwrap();
        if params > 0 {
            assert_eq!(total, params, "{fixture}");
        }
        // The listed tensors add up to the parameter count.
        let listed: u64 = r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                t["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .product::<u64>()
            })
            .sum();
        assert_eq!(listed, total, "{fixture}");
        assert_eq!(r["architecture"]["embed_dim"], 48, "{fixture}");
    }
}

#[test]
fn inspect_reads_an_ijepa_rs_run() {
    let run = std::env::temp_dir().join(format!("ijepa-cli-inspect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    let run_args = [
        "--set",
        "data.synthetic_images=8",
        "--batch-size",
        "4",
        "--max-steps",
        "2",
        "--no-probe",
    ];
    let r = run.to_str().unwrap();
    let out = cli(
        &[&["pretrain", "--out", r], support::TINY_MODEL, &run_args].concat(),
        &[],
    );
    stdout(&out);
    let out = cli(&["inspect", run.to_str().unwrap(), "--json"], &[]);
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(r["layout"], "ijepa-rs");
    assert_eq!(r["checkpoint"]["step"], 2);
    assert_eq!(r["architecture"]["embed_dim"], 32);
    for part in ["encoder", "target_encoder", "predictor", "optimizer"] {
        assert!(
            r["checkpoint"]["parts"][part]["parameters"]
                .as_u64()
                .unwrap()
                > 0,
            "{part}"
        );
    }
    std::fs::remove_dir_all(&run).unwrap();
}

/// `root/{dark,light}/i.png`: dark and light noisy squares, trivially separable.
fn two_class_folder(root: &Path, per_class: usize, seed: u32) {
    for (class, base) in [("dark", 40u8), ("light", 210u8)] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(40, 40, |x, y| {
                let n = ((x * 31 + y * 17 + i as u32 * 101 + seed * 7) % 23) as u8;
                image::Rgb([base + n, base + n / 2, base + n / 3])
            });
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
}

/// `ijepa-cli probe --json --k 5` of `weights` on two folders, with `extra`.
fn probe_json(weights: &str, train: &Path, val: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "probe",
        "--weights",
        weights,
        "--train",
        train.to_str().unwrap(),
        "--val",
        val.to_str().unwrap(),
        "--json",
        "--k",
        "5",
    ];
    args.extend(extra);
    cli(&args, &[])
}

#[test]
fn probe_classifies_separable_folders_with_every_layout() {
    let root = std::env::temp_dir().join(format!("ijepa-cli-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    two_class_folder(&root.join("train"), 12, 0);
    two_class_folder(&root.join("val"), 6, 1);
    let (train, val) = (root.join("train"), root.join("val"));
    let path = |name: &str| encoder_fixture(name).to_string_lossy().into_owned();
    for (weights, extra) in [
        (path("timm_gap"), vec![]),
        (path("hf_ijepa"), vec!["--last-layers", "2"]),
        (
            path("official/official.pth.tar"),
            vec!["--model", "vit_tiny_patch16_224"],
        ),
        // The raw-pixel baseline: 3 × 16 × 16 normalised values per image.
        (
            "pixels".into(),
            vec!["--image-size", "16", "--crop-pct", "1"],
        ),
    ] {
        let out = probe_json(&weights, &train, &val, &extra);
        let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(
            (
                r["classes"].as_u64(),
                r["train_images"].as_u64(),
                r["val_images"].as_u64()
            ),
            (Some(2), Some(24), Some(12))
        );
        for method in ["knn", "linear"] {
            assert_eq!(
                r["results"][method]["top1"], 1.0,
                "{method} on {weights}: {r}"
            );
            assert!(
                r["results"][method]["top5"].is_null(),
                "2 classes have no top-5"
            );
        }
        if extra.contains(&"--last-layers") {
            assert_eq!(r["feature_dim"], 96, "two blocks of 48 concatenated");
        }
        if weights == "pixels" {
            assert_eq!(r["feature_dim"], 768);
        }
    }
    // A class the training folder lacks is an error naming it.
    two_class_folder(&root.join("val2"), 1, 2);
    std::fs::rename(root.join("val2/light"), root.join("val2/zebra")).unwrap();
    let out = cli(
        &[
            "probe",
            "--weights",
            encoder_fixture("timm_gap").to_str().unwrap(),
            "--train",
            train.to_str().unwrap(),
            "--val",
            root.join("val2").to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"zebra\""));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn probes_from_a_feature_folder_equal_probes_in_memory_and_reuse_it() {
    let root = std::env::temp_dir().join(format!("ijepa-cli-features-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    two_class_folder(&root.join("train"), 12, 0);
    two_class_folder(&root.join("val"), 6, 1);
    let (weights, feats) = (encoder_fixture("timm_gap"), root.join("features"));
    let (train, val) = (root.join("train"), root.join("val"));
    let run = |extra: &[&str]| {
        let mut args = vec!["--max-images", "20", "--linear-batch", "8"];
        args.extend(extra);
        probe_json(weights.to_str().unwrap(), &train, &val, &args)
    };
    let results = |out: &Output| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&stdout(out)).unwrap();
        // At most 20 of 24, spread evenly: every second image.
        assert_eq!(
            (v["train_images"].as_u64(), v["val_images"].as_u64()),
            (Some(12), Some(12))
        );
        v["results"].clone()
    };
    let in_memory = results(&run(&[]));
    let f = feats.to_str().unwrap();
    let first = run(&["--features", f]);
    assert!(String::from_utf8_lossy(&first.stderr).contains("→"));
    assert_eq!(results(&first), in_memory);
    for name in ["train.f32", "train.json", "val.f32", "val.json"] {
        assert!(feats.join(name).is_file(), "{name}");
    }
    let again = run(&["--features", f]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("extracted before"));
    assert_eq!(results(&again), in_memory);
    // Features of other settings are never reused.
    let other = run(&["--features", f, "--image-size", "32"]);
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("features of other settings"));
    // Images replaced under the same names: extracted again, not reused.
    let mut images: Vec<_> = std::fs::read_dir(train.join("dark"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    images.sort();
    let mut val_images: Vec<_> = std::fs::read_dir(val.join("light"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    val_images.sort();
    std::fs::copy(&val_images[0], &images[0]).unwrap();
    let changed = run(&["--features", f]);
    let err = String::from_utf8_lossy(&changed.stderr).into_owned();
    assert!(err.contains("images changed") && err.contains("→"), "{err}");
    assert_eq!(results(&changed), results(&run(&[])));
    // A feature file holding NaN is refused by row, never probed.
    let rows = feats.join("train.f32");
    let mut bytes = std::fs::read(&rows).unwrap();
    bytes[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&rows, &bytes).unwrap();
    let poisoned = run(&["--features", f]);
    assert!(!poisoned.status.success());
    let err = String::from_utf8_lossy(&poisoned.stderr).into_owned();
    assert!(err.contains("train.f32: row 0 holds NaN"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_online_probe_logs_knn_accuracy_in_metrics_csv() {
    let root = std::env::temp_dir().join(format!("ijepa-cli-online-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    two_class_folder(&root.join("train"), 8, 0);
    two_class_folder(&root.join("val"), 4, 1);
    let run = root.join("run");
    let set = |k: &str, p: &Path| format!("{k}={}", toml_string(p));
    let (train, val) = (
        set("probe.train", &root.join("train")),
        set("probe.val", &root.join("val")),
    );
    let (r, data) = (run.to_str().unwrap(), root.join("train"));
    let run_args = [
        "--data",
        data.to_str().unwrap(),
        "--batch-size",
        "4",
        "--max-steps",
        "3",
        "--set",
        "probe.every=2",
        "--set",
        &train,
        "--set",
        &val,
        "--no-probe",
    ];
    let out = cli(
        &[&["pretrain", "--out", r], support::TINY_MODEL, &run_args].concat(),
        &[],
    );
    stdout(&out);
    let header = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(
        header.lines().next().unwrap().ends_with(",knn_top1"),
        "{header}"
    );
    let rows = support::metrics(&run);
    let last = |r: usize| rows[r].last().unwrap().as_str();
    // Step 2 is probed (two trivially separable classes), steps 1 and 3 are not.
    assert_eq!((last(0), last(1), last(2)), ("", "1.0000", ""), "{rows:?}");
    std::fs::remove_dir_all(&root).unwrap();
}

fn toml_string(p: &Path) -> String {
    format!("{:?}", p.to_str().unwrap())
}
