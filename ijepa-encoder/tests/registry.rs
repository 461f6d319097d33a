//! Every architecture of timm's registry builds exactly what timm's
//! constructor builds, or is refused naming the feature it lacks.
//!
//! `data/timm_vit_registry.json` (made by `data/make_timm_registry.py` from
//! timm 1.0.31 itself) holds, for every registered Vision Transformer, the
//! state-dict names and shapes timm builds and the facts shapes do not show
//! (heads, norm epsilon, activation, prefix tokens, sizes, pooling).

use std::collections::BTreeMap;

use ijepa_encoder::registry::{self, TimmArgs};

use ijepa_encoder::{Activation, VisionTransformer, VitConfig};

/// timm's state dict of an architecture, without what an encoder leaves
/// out (classifier head, attention-pool head).
fn timm_state(arch: &registry::Architecture) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = arch
        .built
        .state
        .iter()
        .filter(|(k, _)| !k.starts_with("head.") && !k.starts_with("attn_pool."))
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    let depth = arch.built.facts["depth"].as_u64().unwrap() as usize;
    for l in 0..depth {
        for (k, s) in &arch.built.block {
            out.insert(format!("blocks.{l}.{k}"), s.clone());
        }
    }
    out
}

fn ours(cfg: &VitConfig) -> BTreeMap<String, Vec<usize>> {
    VisionTransformer::layout(cfg)
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn every_supported_architecture_is_what_timm_builds() {
    let table = registry::registry();
    let (mut built, mut refused) = (0, vec![]);
    for (name, arch) in &table.architectures {
        let cfg = match registry::resolve(name, &TimmArgs::default()) {
            Ok(r) => r.config,
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("does not implement"), "{name}: {e}");
                refused.push(name.as_str());
                continue;
            }
        };
        let (theirs, mine) = (timm_state(arch), ours(&cfg));
        let missing: Vec<_> = theirs.keys().filter(|k| !mine.contains_key(*k)).collect();
        let extra: Vec<_> = mine.keys().filter(|k| !theirs.contains_key(*k)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{name}: timm has {missing:?}, we add {extra:?}"
        );
        for (k, s) in &theirs {
            assert_eq!(&mine[k], s, "{name}: {k}");
        }
        let f = &arch.built.facts;
        assert_eq!(
            f["num_heads"].as_u64(),
            Some(cfg.num_heads as u64),
            "{name}: heads"
        );
        assert_eq!(f["norm"].as_str(), Some("LayerNorm"), "{name}");
        assert_eq!(f["norm_eps"].as_f64(), Some(cfg.norm_eps), "{name}: eps");
        let act = match cfg.activation {
            // timm's GELUTanh, QuickGELU, SiLU; nn.GELU(approximate='none').
            Activation::Gelu => f["act_approximate"].as_str() == Some("none"),
            other => f["act"].as_str() == Some(other.timm_name()),
        };
        assert!(
            act,
            "{name}: activation {:?} vs {}",
            cfg.activation, f["act"]
        );
        assert_eq!(
            f["num_prefix_tokens"].as_u64(),
            Some(cfg.num_prefix_tokens() as u64),
            "{name}"
        );
        assert_eq!(
            f["no_embed_class"].as_bool(),
            Some(cfg.no_embed_class),
            "{name}"
        );
        let size = [cfg.image_size.0 as u64, cfg.image_size.1 as u64];
        assert_eq!(
            f["img_size"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect::<Vec<_>>(),
            size,
            "{name}"
        );
        assert_eq!(
            f["patch_size"][0].as_u64(),
            Some(cfg.patch_size as u64),
            "{name}"
        );
        assert_eq!(
            f["global_pool"].as_str(),
            Some(cfg.global_pool.timm_name()),
            "{name}"
        );
        built += 1;
    }
    eprintln!(
        "timm {}: {built} architectures equal to timm's construction, {} refused: {}",
        table.timm_version,
        refused.len(),
        refused.join(", ")
    );
    assert!(built >= 140, "only {built} build");
}

#[test]
fn a_tag_sets_what_timm_takes_from_its_pretrained_config() {
    // _384 entrypoints pass no img_size: timm takes it from the tag's
    // input_size (fixed_input_size).
    let c = registry::resolve("vit_base_patch16_384.augreg_in1k", &TimmArgs::default())
        .unwrap()
        .config;
    assert_eq!(c.image_size, (384, 384));
    assert_eq!(c.pos_embed_len(), 24 * 24 + 1);
    // Caller arguments win over the tag, as in timm.create_model.
    let args = TimmArgs {
        img_size: Some(registry::Size::Square(224)),
        ..TimmArgs::default()
    };
    let c = registry::resolve("vit_base_patch16_384", &args)
        .unwrap()
        .config;
    assert_eq!(c.image_size, (224, 224));
    // SigLIP so400m at 384 px / patch 14: 27 x 27 patches, as timm's convolution floors.
    let c = registry::resolve("vit_so400m_patch14_siglip_384", &TimmArgs::default())
        .unwrap()
        .config;
    assert_eq!(c.grid_size(), (27, 27));
}

#[test]
fn the_registry_records_timm_and_every_entrypoint() {
    let table = registry::registry();
    assert_eq!(table.timm_version, "1.0.31");
    assert_eq!(table.architectures.len(), 163);
    let vit = table
        .architectures
        .keys()
        .filter(|k| k.starts_with("vit_"))
        .count();
    assert_eq!(vit, 138, "timm 1.0.31 has 138 vit_* entrypoints");
}

#[test]
fn every_configuration_round_trips_through_timm_arguments() {
    // What exports write (config.json model_args over a base architecture)
    // and what old checkpoints are migrated through.
    let mut checked = 0;
    for name in registry::registry().architectures.keys() {
        let Ok(r) = registry::resolve(name, &TimmArgs::default()) else {
            continue;
        };
        let cfg = r.config;
        let Some(base) = registry::base_for(&cfg) else {
            continue; // an epsilon no base has: exports keep it beside model_args
        };
        let args = TimmArgs::from_config(&cfg);
        // Through JSON, as a config.json carries them.
        let json = serde_json::to_value(&args).unwrap();
        let back = TimmArgs::from_json(&json).unwrap();
        assert_eq!(back, args, "{name}");
        let again = registry::resolve(base, &back).unwrap().config;
        assert_eq!(again, cfg, "{name} over {base}");
        checked += 1;
    }
    assert!(checked >= 130, "{checked}");
}
