//! `ijepa-cli inspect`: what a weight file or run holds.

use std::collections::BTreeMap;

use anyhow::Result;
use candle_core::{DType, Tensor};
use clap::Args;
use ijepa_encoder::WeightMap;
use serde_json::json;

use crate::encoder_source::{load_encoder, Which};

/// Options of `ijepa-cli inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A timm or Hugging Face folder, a .safetensors file, an official
    /// .pth.tar, `hf-hub:org/name[@revision]`, or an ijepa-rs run directory
    /// or checkpoint folder.
    weights: String,
    /// timm model name for what the files do not say.
    #[arg(long)]
    model: Option<String>,
    /// Encoder of a training checkpoint.
    #[arg(long, value_enum, default_value_t = Which::Target)]
    encoder: Which,
    /// Tensors listed with their statistics (0: none).
    #[arg(long, default_value_t = 12)]
    tensors: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn dtype_name(d: DType) -> String {
    format!("{d:?}").to_lowercase()
}

fn stats(t: &Tensor) -> Result<(f64, f64)> {
    let x = t.to_dtype(DType::F64)?.flatten_all()?;
    let mean = x.mean_all()?.to_scalar::<f64>()?;
    let var = x
        .affine(1.0, -mean)?
        .sqr()?
        .mean_all()?
        .to_scalar::<f64>()?;
    Ok((mean, var.sqrt()))
}

/// `(count, parameters, dtypes)` of a set of tensors.
fn totals(w: &WeightMap) -> (usize, usize, Vec<String>) {
    let mut dtypes: Vec<String> = w.values().map(|t| dtype_name(t.dtype())).collect();
    dtypes.sort();
    dtypes.dedup();
    (w.len(), w.values().map(|t| t.elem_count()).sum(), dtypes)
}

/// Runs `ijepa-cli inspect`.
pub fn run(args: &InspectArgs) -> Result<()> {
    let enc = load_encoder(&args.weights, args.model.as_deref(), args.encoder)?;
    let mut report = json!({
        "source": enc.path.display().to_string(),
        "layout": enc.layout,
        "architecture": enc.config,
        "data": enc.data,
    });
    let (count, params, dtypes) = totals(&enc.weights);
    report["encoder"] = json!({"tensors": count, "parameters": params, "dtypes": dtypes});
    if enc.layout == "ijepa-rs" {
        let ck = ijepa_train::run::checkpoint::load(&enc.path, &candle_core::Device::Cpu)?;
        let parts: BTreeMap<&str, _> = [
            ("encoder", totals(&ck.encoder)),
            ("target_encoder", totals(&ck.target_encoder)),
            ("predictor", totals(&ck.predictor)),
            ("optimizer", totals(&ck.optimizer)),
        ]
        .into_iter()
        .map(|(k, (n, p, d))| (k, json!({"tensors": n, "parameters": p, "dtypes": d})))
        .collect();
        let s = &ck.state;
        report["checkpoint"] = json!({
            "step": s.step, "epoch": s.position.epoch, "next_batch": s.position.batch,
            "total_steps": s.total_steps, "loss": s.loss, "lr": s.lr, "images_seen": s.images_seen,
            "skipped_images": s.skipped.len(), "elapsed_s": s.elapsed_s,
            "model": s.config.model.name, "recipe": s.config.model.recipe, "parts": parts,
        });
    }
    let mut names: Vec<&String> = enc.weights.keys().collect();
    names.sort();
    let mut listed = vec![];
    for name in names.into_iter().take(args.tensors) {
        let t = &enc.weights[name];
        let (mean, std) = stats(t)?;
        listed.push(json!({"name": name, "shape": t.dims(), "dtype": dtype_name(t.dtype()), "mean": mean, "std": std}));
    }
    report["tensors"] = json!(listed);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let c = &enc.config;
    println!("{} ({} layout)", enc.path.display(), enc.layout);
    println!(
        "  architecture: ViT, {}x{} px, patch {}, dim {}, depth {}, heads {}, mlp {}, class token {}, registers {}, layer scale {}, pos-embed {}",
        c.image_size.0,
        c.image_size.1,
        c.patch_size,
        c.embed_dim,
        c.depth,
        c.num_heads,
        c.mlp_hidden_dim,
        c.class_token,
        c.reg_tokens,
        c.layer_scale.map_or("no".into(), |v| format!("{v}")),
        if c.fixed_pos_embed { "fixed sin-cos" } else { "learned" },
    );
    println!(
        "  encoder: {count} tensors, {params} parameters ({:.1} M), dtypes {}",
        params as f64 / 1e6,
        dtypes.join(", ")
    );
    let d = &enc.data;
    println!(
        "  preprocessing: mean {:?}, std {:?}, crop_pct {}, {} ({})",
        d.mean, d.std, d.crop_pct, d.interpolation, d.crop_mode
    );
    if let Some(ck) = report.get("checkpoint") {
        println!(
            "  checkpoint: step {} of {}, epoch {}, loss {:.4}, {} images seen, {} skipped, model {} ({} recipe)",
            ck["step"],
            ck["total_steps"],
            ck["epoch"],
            ck["loss"].as_f64().unwrap_or(f64::NAN),
            ck["images_seen"],
            ck["skipped_images"],
            ck["model"].as_str().unwrap_or(""),
            ck["recipe"].as_str().unwrap_or("")
        );
        for (part, v) in ck["parts"].as_object().into_iter().flatten() {
            println!(
                "    {part:<15} {:>4} tensors {:>12} parameters  {}",
                v["tensors"], v["parameters"], v["dtypes"]
            );
        }
    }
    if !listed.is_empty() {
        println!("  tensors (first {} of {count}, timm names):", listed.len());
        for t in &listed {
            println!(
                "    {:<40} {:<18} {:<5} mean {:+.4e}  std {:.4e}",
                t["name"].as_str().unwrap_or(""),
                format!("{}", t["shape"]),
                t["dtype"].as_str().unwrap_or(""),
                t["mean"].as_f64().unwrap_or(f64::NAN),
                t["std"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}
