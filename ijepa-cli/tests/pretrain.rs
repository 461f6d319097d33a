//! `ijepa-cli pretrain`: a run killed mid-way and resumed ends bit-identical
//! to one never interrupted; official YAML configs start runs; a run
//! directory is never overwritten.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};

use crate::support;

/// A tiny run: 12×12 patch grid, 2 blocks, 3 epochs of 4 steps, flips,
/// colour distortion and blur on, gradient clipping on (every branch of the
/// step and of the augmentation is exercised).
const TINY_RUN: &[&str] = &[
    "--set",
    "model.args.depth=2",
    "--set",
    "data.synthetic_images=16",
    "--batch-size",
    "4",
    "--epochs",
    "3",
    "--set",
    "data.horizontal_flip=true",
    "--set",
    "data.color_distortion=true",
    "--set",
    "data.gaussian_blur=true",
    "--set",
    "optim.grad_clip=0.5",
    "--set",
    "run.checkpoint_every=2",
    "--set",
    "run.keep_checkpoints=2",
    "--seed",
    "11",
    "--no-probe",
];

/// The tiny run's arguments followed by `extra`.
fn tiny<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    [support::TINY_MODEL, TINY_RUN, extra].concat()
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ijepa-pretrain-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn pretrain(out: &Path, extra: &[&str], env: Option<(&str, &str)>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ijepa-cli"));
    cmd.arg("pretrain").arg("--out").arg(out).args(extra);
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    cmd.output().expect("ijepa-cli runs")
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// The loss column of metrics.csv, by step.
fn losses(run: &Path) -> Vec<(u64, String)> {
    support::metrics(run)
        .into_iter()
        .map(|c| (c[2].parse().unwrap(), c[3].clone()))
        .collect()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_killed_and_resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    let straight = dir("straight");
    ok(&pretrain(&straight, &tiny(&[]), None));

    // Same run, killed (SIGABRT, no clean-up) right after step 7: the
    // newest checkpoint is step 6, step 7 is lost and redone.
    let killed = dir("killed");
    let out = pretrain(
        &killed,
        &tiny(&[]),
        Some(("IJEPA_TEST_ABORT_AFTER_STEP", "7")),
    );
    assert!(!out.status.success(), "the abort hook did not fire");
    let latest = std::fs::read_to_string(killed.join("checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), "step-00000006");
    assert_eq!(
        losses(&killed).len(),
        7,
        "step 7 was logged before the kill"
    );

    // Resuming takes the run's own config.toml: no other flag is needed.
    let out = pretrain(&killed, &["--resume", "--no-probe"], None);
    ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("resuming from"), "{log}");

    for file in ["model.safetensors", "optimizer.safetensors"] {
        support::assert_same_tensors(
            &straight.join("checkpoints/step-00000012").join(file),
            &killed.join("checkpoints/step-00000012").join(file),
        );
    }
    // Every step's loss is the same, each logged once.
    assert_eq!(losses(&straight), losses(&killed));
    assert_eq!(losses(&straight).len(), 12);
    // keep_checkpoints = 2: steps 10 and 12 remain.
    let kept: Vec<String> = std::fs::read_dir(straight.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(straight.join("loss.png").is_file());
    assert!(straight.join("config.toml").is_file());

    // A second run into the same directory is refused, nothing overwritten.
    let out = pretrain(&straight, &tiny(&[]), None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a run"));
    for d in [straight, killed] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn an_official_yaml_config_starts_a_run() {
    let run = dir("official");
    let yaml = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ijepa-train/tests/fixtures/official_vith14_ep300.yaml");
    // The official ViT-H/14 recipe, shrunk to one step of a tiny model on synthetic data.
    let out = pretrain(
        &run,
        &[
            "--config",
            yaml.to_str().unwrap(),
            "--set",
            "data.path=",
            // The YAML's ViT-H/14 shrunk by timm arguments.
            "--set",
            "model.args.embed_dim=48",
            "--set",
            "model.args.num_heads=3",
            "--set",
            "model.args.depth=1",
            "--set",
            "model.args.img_size=168",
            "--set",
            "model.predictor_depth=1",
            "--set",
            "model.predictor_embed_dim=48",
            "--set",
            "data.synthetic_images=4",
            "--batch-size",
            "2",
            "--max-steps",
            "1",
            "--no-probe",
        ],
        None,
    );
    ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    // Official fields without effect here are named, not silently dropped.
    assert!(log.contains("note: data.pin_mem"), "{log}");
    assert!(log.contains("use_bfloat16"), "{log}");
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    for expected in [
        "official_compat = true",
        "start_lr = 0.0002",
        "final_weight_decay = 0.4",
        "warmup_epochs = 40.0",
        "precision = \"bf16\"",
    ] {
        assert!(saved.contains(expected), "{expected} not in\n{saved}");
    }
    assert_eq!(losses(&run).len(), 1);
    std::fs::remove_dir_all(&run).unwrap();
}

/// Every tensor of a safetensors file is finite.
fn all_finite(path: &Path) -> bool {
    tensors(path).values().all(|t| {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().all(|x| x.is_finite())
    })
}

#[test]
fn a_diverging_run_stops_before_a_poisoned_step_and_resumes_from_the_last_good_one() {
    // The case: at lr 1e3 a step's loss is finite (~1e14) but its
    // gradient norm NaN; before, that step was applied and checkpointed.
    let run = dir("nan");
    for clip in [None, Some("optim.grad_clip=1.0")] {
        let _ = std::fs::remove_dir_all(&run);
        let mut args = tiny(&[
            "--set",
            "optim.lr=1e3",
            "--set",
            "optim.start_lr=1e3",
            "--set",
            "run.checkpoint_every=3",
        ]);
        if let Some(c) = clip {
            args.extend(["--set", c]);
        }
        let out = pretrain(&run, &args, None);
        assert!(!out.status.success(), "{clip:?}");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains("was not applied") && log.contains("last good state"),
            "{log}"
        );
        // `latest` names the state before the refused step, complete and finite.
        let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
        let ck = run.join("checkpoints").join(latest.trim());
        for file in ["model.safetensors", "optimizer.safetensors"] {
            assert!(all_finite(&ck.join(file)), "{clip:?}: {file} of {latest}");
        }
        let logged = losses(&run).len();
        assert_eq!(
            latest.trim(),
            format!("step-{logged:08}"),
            "{clip:?}: the last logged step is the one checkpointed"
        );
        assert!(log.contains(&format!("step {}:", logged + 1)), "{log}");
    }
    // The checkpoint resumes (before, `--resume` failed at once on NaN
    // weights) and the same step is refused again, with the same reason.
    let logged = losses(&run).len();
    let out = pretrain(&run, &["--resume", "--no-probe"], None);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("resuming from") && log.contains(&format!("step {}:", logged + 1)),
        "{log}"
    );
    // Its encoder embeds images with exit 0 and finite features.
    let feats = run.join("feats.safetensors");
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embed_images");
    let out = Command::new(env!("CARGO_BIN_EXE_ijepa-cli"))
        .args(["embed", "--weights", run.to_str().unwrap(), "--images"])
        .arg(&images)
        .arg("--out")
        .arg(&feats)
        .args(["--image-size", "48"])
        .output()
        .unwrap();
    ok(&out);
    assert!(all_finite(&feats));
    std::fs::remove_dir_all(&run).unwrap();
}

#[test]
fn gradient_accumulation_takes_one_step_per_group_of_batches() {
    let run = dir("accumulate");
    ok(&pretrain(
        &run,
        &tiny(&["--set", "optim.accumulate=2"]),
        None,
    ));
    // 16 images in batches of 4 = 4 batches per epoch = 2 steps of 8 images, 3 epochs.
    let rows = support::metrics(&run);
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r[10] == "8"), "{rows:?}");
    std::fs::remove_dir_all(&run).unwrap();
}

/// Starts a long tiny run, waits for `steps` logged steps, sends `signals`
/// (e.g. `["-TERM"]`) and returns its output.
fn signalled(run: &Path, signals: &[&str], steps: usize) -> Output {
    let args = tiny(&["--set", "optim.epochs=1000"]); // far longer than the test waits
    let child = Command::new(env!("CARGO_BIN_EXE_ijepa-cli"))
        .arg("pretrain")
        .arg("--out")
        .arg(run)
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while losses_or_empty(run).len() < steps {
        assert!(std::time::Instant::now() < deadline, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for sig in signals {
        let status = Command::new("kill")
            .args([*sig, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    child.wait_with_output().unwrap()
}

#[test]
fn ctrl_c_finishes_the_step_writes_a_checkpoint_and_exits_130() {
    let run = dir("interrupt");
    let out = signalled(&run, &["-INT"], 3);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{log}");
    assert!(
        log.contains("exiting with status 130 (SIGINT)") && log.contains("stopped after"),
        "{log}"
    );
    // The checkpoint holds the last finished step.
    let steps = losses(&run).len();
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), format!("step-{steps:08}"));
    std::fs::remove_dir_all(&run).unwrap();
}

#[test]
fn sigterm_checkpoints_exits_143_and_the_resumed_run_is_bit_identical() {
    // What a container stop or SLURM's --signal=TERM@N sends.
    let run = dir("sigterm");
    let out = signalled(&run, &["-TERM"], 3);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{log}");
    let steps = losses(&run).len();
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), format!("step-{steps:08}"), "{log}");
    // Resumed to step 12 (--max-steps), it equals a run never interrupted.
    assert!(
        steps < 12,
        "the run was too fast to interrupt: {steps} steps"
    );
    let resumed = pretrain(&run, &["--resume", "--no-probe", "--max-steps", "12"], None);
    ok(&resumed);
    let straight = dir("sigterm-straight");
    ok(&pretrain(
        &straight,
        &tiny(&["--set", "optim.epochs=1000", "--max-steps", "12"]),
        None,
    ));
    for file in ["model.safetensors", "optimizer.safetensors"] {
        support::assert_same_tensors(
            &straight.join("checkpoints/step-00000012").join(file),
            &run.join("checkpoints/step-00000012").join(file),
        );
    }
    assert_eq!(losses(&straight), losses(&run));
    for d in [run, straight] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_second_signal_exits_at_once_and_leaves_no_broken_checkpoint() {
    let run = dir("twice");
    let out = signalled(&run, &["-TERM", "-TERM"], 2);
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Whatever the second signal cut short, `latest` names a complete checkpoint.
    if let Ok(latest) = std::fs::read_to_string(run.join("checkpoints/latest")) {
        let ck = run.join("checkpoints").join(latest.trim());
        for file in ["model.safetensors", "optimizer.safetensors", "state.json"] {
            assert!(ck.join(file).is_file(), "{} lacks {file}", ck.display());
        }
        ok(&pretrain(
            &run,
            &["--resume", "--no-probe", "--max-steps", "8"],
            None,
        ));
    }
    std::fs::remove_dir_all(&run).unwrap();
}

fn losses_or_empty(run: &Path) -> Vec<(u64, String)> {
    match std::fs::read_to_string(run.join("metrics.csv")) {
        Ok(text) if text.lines().count() > 1 => losses(run),
        _ => vec![],
    }
}

#[test]
fn a_run_stopped_before_its_first_step_leaves_a_readable_checkpoint() {
    let run = dir("zero");
    ok(&pretrain(&run, &tiny(&["--max-steps", "0"]), None));
    let out = Command::new(env!("CARGO_BIN_EXE_ijepa-cli"))
        .args(["inspect", "--json"])
        .arg(&run)
        .output()
        .unwrap();
    ok(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["checkpoint"]["step"], 0);
    assert!(r["checkpoint"]["loss"].is_null());
    // It resumes too.
    ok(&pretrain(
        &run,
        &["--resume", "--max-steps", "1", "--no-probe"],
        None,
    ));
    std::fs::remove_dir_all(&run).unwrap();
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ijepa-encoder/tests/fixtures")
        .join(name)
}

/// The tensors under `prefix.` of a checkpoint's model.safetensors.
fn part(ck: &Path, prefix: &str) -> HashMap<String, Tensor> {
    tensors(&ck.join("model.safetensors"))
        .into_iter()
        .filter_map(|(k, t)| Some((k.strip_prefix(&format!("{prefix}."))?.to_string(), t)))
        .collect()
}

fn assert_equal_maps(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>, what: &str) {
    let mut names: Vec<_> = a.keys().collect();
    names.sort();
    let mut other: Vec<_> = b.keys().collect();
    other.sort();
    assert_eq!(names, other, "{what}: names");
    for n in names {
        let bits = |t: &Tensor| -> Vec<u32> {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(&a[n]), bits(&b[n]), "{what}: {n}");
    }
}

#[test]
fn a_run_starts_from_pretrained_weights_and_takes_their_architecture() {
    let timm = fixture("timm_gap");
    let t = timm.to_str().unwrap();
    let small = support::INIT_RUN;
    // timm weights: student and teacher are the file's, bit for bit; the
    // architecture is the one its config.json names.
    let run = dir("init-timm");
    let out = pretrain(&run, &[&["--init", t][..], small].concat(), None);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model vit_huge_patch14_gap_224"), "{err}");
    assert!(
        err.contains("(timm weights): student and teacher; the predictor starts fresh"),
        "{err}"
    );
    let ck = run.join("checkpoints/step-00000000");
    let file = tensors(&timm.join("model.safetensors"));
    assert_equal_maps(&part(&ck, "encoder"), &file, "student");
    assert_equal_maps(&part(&ck, "target_encoder"), &file, "teacher");

    // Then it trains, and a run started from that run's checkpoint takes
    // its student, teacher and predictor.
    let trained = dir("init-trained");
    let mut steps = small.to_vec();
    *steps.last_mut().unwrap() = "2";
    ok(&pretrain(
        &trained,
        &[&["--init", t][..], &steps].concat(),
        None,
    ));
    let source = trained.join("checkpoints/step-00000002");
    let again = dir("init-run");
    let out = pretrain(
        &again,
        &[&["--init", trained.to_str().unwrap()][..], small].concat(),
        None,
    );
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("and its predictor"));
    let ck = again.join("checkpoints/step-00000000");
    for prefix in ["encoder", "target_encoder", "predictor"] {
        assert_equal_maps(&part(&ck, prefix), &part(&source, prefix), prefix);
    }
    assert_ne!(
        part(&source, "encoder")["blocks.0.attn.qkv.weight"]
            .to_vec2::<f32>()
            .unwrap(),
        file["blocks.0.attn.qkv.weight"].to_vec2::<f32>().unwrap(),
        "two steps changed the student"
    );

    // At another image size: the source's architecture with the position
    // table resampled as timm loads it (ijepa-train's init tests compare it
    // with timm).
    let resized = dir("init-84");
    let out = pretrain(
        &resized,
        &[&["--init", t, "--set", "model.args.img_size=84"][..], small].concat(),
        None,
    );
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the run is at 84×84 px: position table resampled from 4×4 to 6×6 patches"),
        "{err}"
    );
    let student = part(&resized.join("checkpoints/step-00000000"), "encoder");
    assert_eq!(student["pos_embed"].dims(), [1, 36, 48]);

    // Under the seed recipe the weights stay as they are, and the log says
    // where stable-pretraining's IJEPA would differ.
    let seeded = dir("init-seed");
    let out = pretrain(
        &seeded,
        &[&["--init", t, "--set", "model.recipe=seed"][..], small].concat(),
        None,
    );
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("IJEPA would also divide every block's"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_equal_maps(
        &part(&seeded.join("checkpoints/step-00000000"), "encoder"),
        &file,
        "seed student",
    );

    // Another architecture is refused with both named.
    let out = pretrain(
        &dir("init-mismatch"),
        &[
            &["--init", t, "--model", "vit_small_patch16_224"][..],
            small,
        ]
        .concat(),
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds another encoder than the run's")
            && err.contains("embed_dim: the run has 384, the weights 48"),
        "{err}"
    );
    for d in [run, trained, again, resized, seeded] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn no_probe_is_kept_by_the_run_so_resume_honours_it() {
    let run = dir("no-probe");
    let args = |steps: &'static str| -> Vec<&'static str> {
        [
            support::TINY_MODEL,
            &[
                "--set",
                "data.synthetic_images=8",
                "--batch-size",
                "4",
                "--epochs",
                "2",
                "--max-steps",
                steps,
            ],
        ]
        .concat()
    };
    ok(&pretrain(
        &run,
        &[&args("1")[..], &["--no-probe"]].concat(),
        None,
    ));
    let out = pretrain(&run, &["--resume", "--max-steps", "2"], None);
    ok(&out);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("k-NN top-1"),
        "the resumed run probed"
    );
    std::fs::remove_dir_all(&run).unwrap();
}

#[test]
fn a_run_on_tar_shards_written_by_the_cli_resumes_bit_identical() {
    let root = dir("shards");
    let images = root.join("images");
    let shapes = ijepa_train::data::SyntheticShapes::new(48, 16, 2);
    for i in 0..16 {
        let (img, label) = shapes.get(i);
        let class = images.join(format!("class{label}"));
        std::fs::create_dir_all(&class).unwrap();
        img.save(class.join(format!("{i}.png"))).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ijepa-cli"))
        .args(["shards", "--per-shard", "3", "--data"])
        .arg(&images)
        .arg("--out")
        .arg(root.join("shards"))
        .output()
        .unwrap();
    ok(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    let pattern = root.join("shards/shard-{000000..000005}.tar");
    let pattern = pattern.to_str().unwrap();
    assert!(
        said.contains("16 images in 6 shard(s)") && said.contains(pattern),
        "{said}"
    );
    let run = |name: &str, abort: Option<(&str, &str)>| {
        let out_dir = root.join(name);
        let out = pretrain(&out_dir, &tiny(&["--data", pattern]), abort);
        (out_dir, out)
    };
    let (straight, out) = run("straight", None);
    ok(&out);
    let (killed, out) = run("killed", Some(("IJEPA_TEST_ABORT_AFTER_STEP", "5")));
    assert!(!out.status.success(), "the abort hook did not fire");
    ok(&pretrain(&killed, &["--resume", "--no-probe"], None));
    assert_eq!(losses(&straight).len(), 12);
    assert_eq!(losses(&straight), losses(&killed));
    support::assert_same_tensors(
        &straight.join("checkpoints/step-00000012/model.safetensors"),
        &killed.join("checkpoints/step-00000012/model.safetensors"),
    );
    let config = std::fs::read_to_string(straight.join("config.toml")).unwrap();
    assert!(config.contains("shard-{000000..000005}.tar"), "{config}");
    std::fs::remove_dir_all(root).unwrap();
}

/// The architecture of the official run in ijepa-train's fixture
/// (`make_official_run.py`'s `vit_fixture`), under the name of a model of
/// other heads (6): the file does not say its head count, the run's
/// `num_heads` does.
const OFFICIAL_FIXTURE_MODEL: &[&str] = &[
    "--set",
    "model.name=vit_small_patch16_224",
    "--set",
    "model.args.img_size=48",
    "--set",
    "model.args.patch_size=8",
    "--set",
    "model.args.embed_dim=48",
    "--set",
    "model.args.depth=2",
    "--set",
    "model.args.num_heads=3",
    "--set",
    "model.predictor_embed_dim=24",
    "--set",
    "model.predictor_depth=1",
    "--set",
    "mask.min_keep=3",
];

#[test]
fn an_official_run_continues_here_and_resumes_bit_identical() {
    let official = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ijepa-train/tests/fixtures/official_run/epoch1.pth.tar");
    let official = official.to_str().unwrap();
    // 8 images at batch 2: 4 steps an epoch, where the official run took 2;
    // its checkpoint after epoch 1 continues at step 4, AdamW at its step 2.
    let args = |extra: &[&str]| -> Vec<String> {
        [
            OFFICIAL_FIXTURE_MODEL,
            &[
                "--resume-from",
                official,
                "--set",
                "data.synthetic_images=8",
                "--batch-size",
                "2",
                "--epochs",
                "3",
                "--max-steps",
                "8",
                "--set",
                "run.checkpoint_every=1",
                "--no-probe",
            ],
            extra,
        ]
        .concat()
        .into_iter()
        .map(str::to_string)
        .collect()
    };
    let run = |name: &str, extra: &[&str], abort: Option<(&str, &str)>| {
        let out_dir = dir(name);
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = pretrain(&out_dir, &a, abort);
        (out_dir, out)
    };
    let (straight, out) = run("official-straight", &[], None);
    ok(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("continuing the official run")
            && said.contains("after epoch 1 (2 AdamW steps"),
        "{said}"
    );
    let steps: Vec<u64> = losses(&straight).iter().map(|(s, _)| *s).collect();
    assert_eq!(
        steps,
        [5, 6, 7, 8],
        "the schedules continue at epoch 1 × 4 steps"
    );
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(straight.join("checkpoints/step-00000008/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["step"], 8);
    assert_eq!(
        state["optimizer_step"], 6,
        "AdamW counts its own steps: 2 + 4"
    );
    assert_eq!(state["images_seen"], 8 + 4 * 2);

    // Killed after step 6 and resumed: the run's own checkpoint (step 6,
    // AdamW step 4) continues, not the official file again.
    let (killed, out) = run(
        "official-killed",
        &[],
        Some(("IJEPA_TEST_ABORT_AFTER_STEP", "6")),
    );
    assert!(!out.status.success(), "the abort hook did not fire");
    let out = pretrain(&killed, &["--resume", "--no-probe"], None);
    ok(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("not read again"), "{said}");
    assert_eq!(losses(&straight), losses(&killed));
    support::assert_same_tensors(
        &straight.join("checkpoints/step-00000008/model.safetensors"),
        &killed.join("checkpoints/step-00000008/model.safetensors"),
    );
    support::assert_same_tensors(
        &straight.join("checkpoints/step-00000008/optimizer.safetensors"),
        &killed.join("checkpoints/step-00000008/optimizer.safetensors"),
    );

    // What cannot continue is refused, named.
    let (nothing, out) = run("official-done", &["--set", "optim.epochs=1"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ends epoch 1") && err.contains("nothing is left to train"),
        "{err}"
    );
    let (both, out) = run("official-both", &["--init", official], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("two starting points"), "{err}");
    for d in [straight, killed, nothing, both] {
        let _ = std::fs::remove_dir_all(d);
    }
}
