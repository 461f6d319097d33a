//! Loading errors name what is wrong; saving in timm's layout round-trips.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ijepa_encoder::weights::{load, save_timm, LoadOptions, WeightLayout};
use ijepa_encoder::{EncoderError, TokenEncoder, VisionTransformer};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ijepa-encoder-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_weight_error_lists_every_problem() {
    let loaded = load(&fixture("timm_cls"), &LoadOptions::default()).unwrap();
    let mut w = loaded.weights.clone();
    w.remove("blocks.1.mlp.fc2.bias");
    w.insert(
        "blocks.9.extra".into(),
        Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    w.insert(
        "cls_token".into(),
        Tensor::zeros((1, 2, 48), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let err = VisionTransformer::check_weights(&loaded.config, &w, Path::new("model.safetensors"))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EncoderError::Weights { .. }));
    for needle in [
        "model.safetensors",
        "missing keys: blocks.1.mlp.fc2.bias",
        "unexpected keys: blocks.9.extra",
        "cls_token: shape [1, 2, 48] in file, expected [1, 1, 48]",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in:\n{msg}");
    }
}

#[test]
fn bad_paths_and_configs_say_why() {
    let err = load(Path::new("/nonexistent/model"), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/model") && err.contains("no such file"),
        "{err}"
    );

    let empty = scratch("empty");
    let err = load(&empty, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no config.json + model.safetensors"), "{err}");

    std::fs::write(empty.join("config.json"), "{\"hidden_size\": 3}").unwrap();
    let err = load(&empty, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("neither a timm config"),
        "{err}"
    );

    std::fs::write(empty.join("config.json"), "{not json").unwrap();
    let err = load(&empty, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not valid JSON"), "{err}");

    let timm = scratch("timm-args");
    std::fs::copy(
        fixture("timm_gap/model.safetensors"),
        timm.join("model.safetensors"),
    )
    .unwrap();
    let config = std::fs::read_to_string(fixture("timm_gap/config.json")).unwrap();
    for (arg, expected) in [
        // A feature we do not build is named, never approximated.
        (
            "\"mlp_layer\": \"SwiGLU\"",
            "uses mlp_layer \"SwiGLU\", which ijepa-rs does not implement",
        ),
        // An argument timm's VisionTransformer does not take.
        ("\"nonsense\": 1", "model_args: unknown field `nonsense`"),
        // A feature we do build, without its weights: a weights error.
        (
            "\"qk_norm\": true",
            "missing keys: blocks.0.attn.q_norm.weight",
        ),
    ] {
        std::fs::write(
            timm.join("config.json"),
            config.replace("\"depth\": 2", &format!("\"depth\": 2, {arg}")),
        )
        .unwrap();
        let err = load(&timm, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{arg}: {err}");
    }
    // A data field of the wrong type is an error, never the default.
    let json: serde_json::Value = serde_json::from_str(&config).unwrap();
    for (key, value, expected) in [
        (
            "mean",
            serde_json::json!("x"),
            "pretrained_cfg.mean = \"x\" is not a list of 3 numbers",
        ),
        (
            "std",
            serde_json::json!([0.2, 0.0, 0.2]),
            "is not a list of 3 positive numbers",
        ),
        (
            "crop_pct",
            serde_json::json!("0.9"),
            "pretrained_cfg.crop_pct = \"0.9\" is not a number",
        ),
        (
            "interpolation",
            serde_json::json!(3),
            "pretrained_cfg.interpolation = 3 is not a string",
        ),
        (
            "input_size",
            serde_json::json!([224, 224]),
            "is not [channels, height, width]",
        ),
    ] {
        let mut j = json.clone();
        j["pretrained_cfg"][key] = value;
        std::fs::write(timm.join("config.json"), j.to_string()).unwrap();
        let err = load(&timm, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(expected) && err.contains("config.json"),
            "{key}: {err}"
        );
    }
    std::fs::remove_dir_all(&empty).unwrap();
    std::fs::remove_dir_all(&timm).unwrap();
}

#[test]
fn timm_layout_round_trips_from_every_source() {
    let io = |name: &str| {
        candle_core::safetensors::load(fixture(name).join("io.safetensors"), &Device::Cpu).unwrap()
    };
    for (source, io_name) in [
        ("timm_cls", "timm_cls"),
        ("timm_fcnorm", "timm_fcnorm"),
        ("hf_ijepa_v4", "hf_ijepa"),
    ] {
        let loaded = load(&fixture(source), &LoadOptions::default()).unwrap();
        let dir = scratch(source);
        save_timm(&dir, &loaded.config, &loaded.data, &loaded.weights).unwrap();
        let again = load(&dir, &LoadOptions::default()).unwrap();
        assert_eq!(again.layout, WeightLayout::Timm);
        let mut expected = loaded.config.clone();
        expected.fixed_pos_embed = false;
        assert_eq!(again.config, expected, "{source}");
        assert_eq!(again.data, loaded.data, "{source}");
        assert_eq!(again.weights.len(), loaded.weights.len());
        for (k, t) in &loaded.weights {
            let a = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = again.weights[k]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(a, b, "{source}: {k} changed");
        }
        let io = io(io_name);
        let tokens = again.build().unwrap().forward(&io["images"]).unwrap();
        let err: f32 = (tokens - &io["tokens"])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(err < 1e-4, "{source}: {err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn hf_export_writes_the_published_key_layout_and_round_trips() {
    let source = load(&fixture("hf_ijepa"), &LoadOptions::default()).unwrap();
    let out = scratch("save-hf").join("export");
    ijepa_encoder::weights::save_hf(&out, &source.config, &source.data, &source.weights).unwrap();
    // The keys and shapes of the transformers-4 file the facebook/ijepa_* checkpoints use.
    let shapes = |p: PathBuf| -> Vec<(String, Vec<usize>)> {
        let mut v: Vec<_> = candle_core::safetensors::load(p, &Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, t.dims().to_vec()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        shapes(out.join("model.safetensors")),
        shapes(fixture("hf_ijepa_v4").join("model.safetensors"))
    );
    let back = load(&out, &LoadOptions::default()).unwrap();
    assert_eq!(back.layout, WeightLayout::Hf);
    assert_eq!(back.config, source.config);
    assert_eq!(
        (back.data.mean, back.data.std),
        (source.data.mean, source.data.std)
    );
    for (name, t) in &source.weights {
        let diff = (t - &back.weights[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{name}");
    }
    // What IJepaModel cannot express is refused, naming it.
    let timm = load(&fixture("timm_cls"), &LoadOptions::default()).unwrap();
    let err = ijepa_encoder::weights::save_hf(
        &scratch("save-hf-cls"),
        &timm.config,
        &timm.data,
        &timm.weights,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("class token"), "{err}");
    std::fs::remove_dir_all(out.parent().unwrap()).unwrap();
}

#[test]
fn pytorch_checkpoint_layouts_read_as_the_plain_one() {
    let bits = |w: &ijepa_encoder::WeightMap, k: &str| -> Vec<u32> {
        let v = w[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    };
    let opts = |branch| LoadOptions {
        branch,
        model: Some("vit_tiny_patch16_224".into()), // width 48: 3 heads, as the fixture
        ..LoadOptions::default()
    };
    let plain = fixture("official/official.pth.tar");
    let variants = fixture("pth_variants");
    use ijepa_encoder::weights::Branch::{Context, Target};
    // One dict object under both keys: both branches are the encoder.
    let reference = load(&plain, &opts(Context)).unwrap();
    let shared = load(&variants.join("shared.pth.tar"), &opts(Target)).unwrap();
    // Views into one storage, 2-D tensors with column-major strides.
    let reference_t = load(&plain, &opts(Target)).unwrap();
    let views = load(&variants.join("views.pth.tar"), &opts(Target)).unwrap();
    for (a, b) in [(&reference, &shared), (&reference_t, &views)] {
        assert_eq!(a.config, b.config);
        assert_eq!(a.weights.len(), b.weights.len());
        for k in a.weights.keys() {
            assert_eq!(bits(&a.weights, k), bits(&b.weights, k), "{k}");
        }
    }
    let err = load(&variants.join("legacy.pth.tar"), &opts(Target))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("legacy (non-zip) torch.save file") && err.contains("torch.save(torch.load("),
        "{err}"
    );
    let err = load(&variants.join("views.pth.tar"), &opts(Context))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no \"encoder\" in this checkpoint (it holds target_encoder)"),
        "{err}"
    );
}
