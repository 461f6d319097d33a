//! A step that is not finite changes nothing and is never checkpointed:
//! NaN injected into an exchanged gradient (through the collective seam),
//! and an update that overflows.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use candle_core::{Device, Tensor};
use ijepa_train::collective::{Collective, SingleProcess};
use ijepa_train::model::{IJepa, IJepaConfig};
use ijepa_train::run::trainer::Trainer;
use ijepa_train::step::{StepBatch, StepHyper, StepOutcome, TrainStep};
use ijepa_train::{TrainConfig, TrainError};

/// A one-process collective that turns one gradient element into NaN on
/// its `at`-th exchange (1-based).
struct Poison {
    at: usize,
    calls: Cell<usize>,
}

impl Poison {
    fn at(at: usize) -> Box<Self> {
        Box::new(Self {
            at,
            calls: Cell::new(0),
        })
    }
}

impl Collective for Poison {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, tensors: &[Tensor]) -> ijepa_train::Result<Vec<Tensor>> {
        self.calls.set(self.calls.get() + 1);
        let mut out = tensors.to_vec();
        if self.calls.get() == self.at {
            // The first gradient's first element becomes NaN.
            let g = &out[0];
            let mut v = g.flatten_all()?.to_vec1::<f32>()?;
            v[0] = f32::NAN;
            out[0] = Tensor::from_vec(v, g.shape(), g.device())?;
        }
        Ok(out)
    }
    fn broadcast(&self, tensors: &[Tensor], _root: usize) -> ijepa_train::Result<Vec<Tensor>> {
        Ok(tensors.to_vec())
    }
    fn barrier(&self) -> ijepa_train::Result<()> {
        Ok(())
    }
}

fn tiny_model() -> IJepa {
    let mut cfg = IJepaConfig::new(
        ijepa_encoder::registry::resolve(
            "vit_tiny_patch16_224",
            &ijepa_encoder::registry::TimmArgs::gap(),
        )
        .unwrap()
        .config,
    );
    cfg.encoder.depth = 1;
    cfg.encoder.embed_dim = 48;
    cfg.encoder.mlp_hidden_dim = 192;
    cfg.predictor_embed_dim = 48;
    cfg.predictor_depth = 1;
    cfg.seed = 3;
    IJepa::new(cfg, &Device::Cpu).unwrap()
}

/// Every weight (student, teacher, predictor) and moment, as bits.
fn state(step: &TrainStep) -> Vec<(String, Vec<u32>)> {
    let bits = |t: &Tensor| -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    };
    let m = step.model();
    let mut out: Vec<(String, Vec<u32>)> = vec![];
    for (prefix, w) in [
        ("student", m.student_weights().unwrap()),
        ("teacher", m.teacher_weights().clone()),
        ("predictor", m.predictor_weights().unwrap()),
        ("optimizer", step.optimizer().state_tensors()),
    ] {
        out.extend(w.iter().map(|(k, t)| (format!("{prefix}.{k}"), bits(t))));
    }
    out.push(("step".into(), vec![step.optimizer().step as u32]));
    out.sort();
    out
}

fn batch(model: &IJepa, index: u64) -> StepBatch {
    let images = Tensor::randn(0f32, 1.0, (2, 3, 224, 224), &Device::Cpu).unwrap();
    StepBatch::new(images, &model.sample_masks(2, index)).unwrap()
}

const HYPER: StepHyper = StepHyper {
    lr: 1e-3,
    weight_decay: 0.04,
    momentum: 0.996,
};

#[test]
fn a_nan_injected_into_a_gradient_changes_nothing() {
    let model = tiny_model();
    let batches = [batch(&model, 0), batch(&model, 1)];
    let mut step = TrainStep::new(model, 0.04, Some(1.0), Poison::at(2));
    assert!(matches!(
        step.run(&batches[..1], HYPER).unwrap(),
        StepOutcome::Applied(_)
    ));
    let before = state(&step);
    let outcome = step.run(&batches[1..], HYPER).unwrap();
    let StepOutcome::Refused(why) = outcome else {
        panic!("a NaN gradient was applied: {outcome:?}");
    };
    assert!(why.contains("gradient norm is NaN"), "{why}");
    assert_eq!(state(&step), before, "a refused step changed the state");
    // The next healthy step goes on from the unchanged state.
    assert!(matches!(
        step.run(&batches[1..], HYPER).unwrap(),
        StepOutcome::Applied(_)
    ));
    assert_ne!(state(&step), before);
}

#[test]
fn an_update_that_overflows_is_refused_before_it_is_made() {
    let model = tiny_model();
    let b = batch(&model, 0);
    let mut step = TrainStep::new(model, 0.04, None, Box::new(SingleProcess));
    let before = state(&step);
    let huge = StepHyper { lr: 1e39, ..HYPER };
    let StepOutcome::Refused(why) = step.run(std::slice::from_ref(&b), huge).unwrap() else {
        panic!("an overflowing update was applied");
    };
    assert!(
        why.contains("would make weights that are not finite"),
        "{why}"
    );
    assert_eq!(state(&step), before);
}

fn tiny_run(out: &str) -> (TrainConfig, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ijepa-faults-{}-{out}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = TrainConfig::default();
    for set in [
        "model.args.img_size=48",
        "model.args.embed_dim=32",
        "model.args.num_heads=2",
        "model.args.depth=2",
        "model.predictor_embed_dim=16",
        "model.predictor_depth=1",
        "data.synthetic_images=16",
        "data.batch_size=4",
        "optim.epochs=2",
        "run.checkpoint_every=0",
        "data.workers=1",
    ] {
        cfg.set(set).unwrap();
    }
    cfg.run.out = dir.clone();
    (cfg, dir)
}

#[test]
fn a_refused_step_stops_the_run_and_the_last_good_state_is_checkpointed() {
    let (cfg, dir) = tiny_run("trainer");
    let mut trainer = Trainer::with_collective(cfg, Poison::at(3)).unwrap();
    let err = trainer
        .run(&mut (), &AtomicBool::new(false))
        .expect_err("the poisoned step stops the run");
    let TrainError::NonFinite {
        step,
        what,
        last_checkpoint,
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(*step, 3, "{err}");
    assert!(what.contains("NaN"), "{err}");
    assert!(last_checkpoint.ends_with("step-00000002"), "{err}");
    // Nothing of step 3 exists; `latest` names the complete, finite step 2.
    let latest = std::fs::read_to_string(dir.join("checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), "step-00000002");
    let names: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("00000003")), "{names:?}");
    let ck =
        ijepa_train::run::checkpoint::load(&dir.join("checkpoints/step-00000002"), &Device::Cpu)
            .expect("the last good checkpoint loads (it is checked finite)");
    assert_eq!(ck.state.step, 2);
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "header and steps 1-2:\n{csv}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_with_a_nan_is_never_written_and_never_resumed() {
    let dir = std::env::temp_dir().join(format!("ijepa-faults-{}-nan-ck", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (cfg, _) = tiny_run("unused");
    let state = ijepa_train::run::checkpoint::CheckpointState {
        format: ijepa_train::run::checkpoint::FORMAT.into(),
        step: 1,
        position: Default::default(),
        steps_per_epoch: 1,
        total_steps: 1,
        loss: None,
        lr: 0.0,
        weight_decay: 0.0,
        momentum: 0.0,
        images_seen: 0,
        skipped: vec![],
        elapsed_s: 0.0,
        rng: String::new(),
        config: cfg,
        encoder: None,
        world_size: 1,
        files: None,
        optimizer_step: None,
    };
    let mut w = ijepa_encoder::WeightMap::new();
    w.insert(
        "x".into(),
        Tensor::new(&[1f32, f32::INFINITY], &Device::Cpu).unwrap(),
    );
    let empty = ijepa_encoder::WeightMap::new();
    let err = ijepa_train::run::checkpoint::save(
        &dir,
        [
            ("encoder", &w),
            ("target_encoder", &empty),
            ("predictor", &empty),
        ],
        &empty,
        &state,
        3,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("encoder.x") && err.contains("NaN or infinite"),
        "{err}"
    );
    assert!(ijepa_train::run::checkpoint::list(&dir).unwrap().is_empty());
    assert!(!dir.join("checkpoints/latest").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A checkpoint poisoned on disk (not by us) is refused when read.
    let mut finite = ijepa_encoder::WeightMap::new();
    finite.insert("x".into(), Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap());
    let path = ijepa_train::run::checkpoint::save(
        &dir,
        [
            ("encoder", &finite),
            ("target_encoder", &empty),
            ("predictor", &empty),
        ],
        &empty,
        &state,
        3,
    )
    .unwrap();
    ijepa_train::run::checkpoint::load(&path, &Device::Cpu).unwrap();
    ijepa_encoder::io::output::write_safetensors(
        &path.join("model.safetensors"),
        [("encoder.x", &w["x"])],
        None,
    )
    .unwrap();
    let err = ijepa_train::run::checkpoint::load(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    // The recorded checksum sees the change first...
    assert!(
        err.contains("model.safetensors changed after it was written"),
        "{err}"
    );
    // ...and a checkpoint written before checksums were recorded is still
    // checked finite.
    let state_path = path.join("state.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("files");
    std::fs::write(&state_path, serde_json::to_vec(&json).unwrap()).unwrap();
    let err = ijepa_train::run::checkpoint::load(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encoder: 1 tensors hold NaN or infinite values (x)"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
