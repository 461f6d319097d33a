//! Run configurations of ijepa-rs 0.1 (checkpoint format v1): their model
//! section named an encoder `vit_{size}_patch{P}[_regN][_gap]_{image}` and
//! overrode it with `embed_dim`, `depth` and `num_heads`, read by a name
//! parser the timm registry has replaced. Those runs were trained with what
//! that parser built (a `_gap` base ViT had 12 heads, not timm's 16), so
//! they are translated with its rules, exactly, into a registered name and
//! timm arguments — never re-read with the new meaning of the name.

use ijepa_encoder::registry::{self, TimmArgs};
use ijepa_encoder::{Pool, VitConfig};

use crate::error::{Result, TrainError};

/// Widths, depths, heads and MLP widths of the 0.1 size words.
const SIZES: &[(&str, usize, usize, usize, usize)] = &[
    ("tiny", 192, 12, 3, 768),
    ("small", 384, 12, 6, 1536),
    ("base", 768, 12, 12, 3072),
    ("large", 1024, 24, 16, 4096),
    ("huge", 1280, 32, 16, 5120),
    ("giant", 1408, 40, 16, 6144),
];

/// The encoder a 0.1 model section built.
fn v1_encoder(
    name: &str,
    embed_dim: Option<usize>,
    depth: Option<usize>,
    num_heads: Option<usize>,
) -> Option<VitConfig> {
    let base = name.split('.').next()?;
    let parts: Vec<&str> = base.split('_').collect();
    let ["vit", size, patch, rest @ ..] = parts.as_slice() else {
        return None;
    };
    let (flags, image) = rest.split_last().map(|(i, f)| (f, i))?;
    let image: usize = image.parse().ok()?;
    let patch: usize = patch.strip_prefix("patch")?.parse().ok()?;
    let &(_, d, l, h, hidden) = SIZES.iter().find(|s| s.0 == *size)?;
    let mut cfg = VitConfig::ijepa((image, image), patch, d, l, h, hidden, 1e-6);
    cfg.class_token = true;
    cfg.global_pool = Pool::Token;
    for flag in flags {
        if *flag == "gap" {
            cfg.class_token = false;
            cfg.global_pool = Pool::Avg;
        } else if let Some(n) = flag.strip_prefix("reg").and_then(|n| n.parse().ok()) {
            cfg.reg_tokens = n;
            cfg.no_embed_class = true;
        } else {
            return None;
        }
    }
    if let Some(d) = embed_dim {
        cfg.embed_dim = d;
        cfg.mlp_hidden_dim = d.saturating_mul(4);
    }
    cfg.depth = depth.unwrap_or(cfg.depth);
    cfg.num_heads = num_heads.unwrap_or(cfg.num_heads);
    Some(cfg)
}

/// A 0.1 field's value: a number, or unset (`""`, or absent).
fn field(model: &toml::Table, key: &str) -> Result<Option<usize>> {
    match model.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) if s.is_empty() => Ok(None),
        Some(toml::Value::Integer(n)) if *n > 0 => Ok(Some(*n as usize)),
        Some(v) => Err(TrainError::Config(format!(
            "model.{key} = {v} (an ijepa-rs 0.1 setting) is not a positive integer"
        ))),
    }
}

/// Rewrites a 0.1 model section (one with `embed_dim`, `depth` or
/// `num_heads`) in place into `name` + `args`; returns a note saying so,
/// or `None` for a current section.
///
/// # Errors
/// A 0.1 name its parser could not read either.
pub(crate) fn upgrade_model(model: &mut toml::Table) -> Result<Option<String>> {
    let legacy = ["embed_dim", "depth", "num_heads"];
    if !legacy.iter().any(|k| model.contains_key(*k)) {
        return Ok(None);
    }
    let name = model
        .get("name")
        .and_then(toml::Value::as_str)
        .unwrap_or("vit_tiny_patch4_gap_36")
        .to_string();
    let (d, l, h) = (
        field(model, "embed_dim")?,
        field(model, "depth")?,
        field(model, "num_heads")?,
    );
    let cfg = v1_encoder(&name, d, l, h).ok_or_else(|| {
        TrainError::Config(format!(
            "model.name {name:?} with embed_dim/depth/num_heads is an ijepa-rs 0.1 model section, \
             but not a name 0.1 could read either"
        ))
    })?;
    let base = registry::base_for(&cfg).unwrap_or("vit_base_patch16_224");
    let args = TimmArgs::from_config(&cfg);
    for k in legacy {
        model.remove(k);
    }
    model.insert("name".into(), toml::Value::String(base.into()));
    let table = toml::Table::try_from(&args)
        .map_err(|e| TrainError::Config(format!("model.args of {name:?}: {e}")))?;
    model.insert("args".into(), toml::Value::Table(table));
    Ok(Some(format!(
        "model.name {name:?} (with embed_dim/depth/num_heads) is an ijepa-rs 0.1 model section: \
         read as 0.1 built it, now {base} with model.args"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgraded(toml_text: &str) -> (VitConfig, String) {
        let mut t: toml::Table = toml::from_str(toml_text).unwrap();
        let note = upgrade_model(&mut t).unwrap().unwrap();
        let name = t["name"].as_str().unwrap().to_string();
        let args: TimmArgs = t["args"].clone().try_into().unwrap();
        (registry::resolve(&name, &args).unwrap().config, note)
    }

    #[test]
    fn a_v1_section_becomes_what_v1_built() {
        // The 0.1 demonstration model.
        let (c, note) = upgraded(
            "name = \"vit_tiny_patch4_gap_36\"\nembed_dim = 128\ndepth = 4\nnum_heads = 4\n",
        );
        assert_eq!(
            (
                c.image_size,
                c.patch_size,
                c.embed_dim,
                c.depth,
                c.num_heads,
                c.mlp_hidden_dim
            ),
            ((36, 36), 4, 128, 4, 4, 512)
        );
        assert!(!c.class_token && c.norm && !c.fc_norm);
        assert!(note.contains("0.1"), "{note}");
        // 0.1 read "base" as 12 heads, where timm's registry has 16: a v1 run
        // keeps what it was trained with.
        let (c, _) =
            upgraded("name = \"vit_base_patch16_gap_224\"\nembed_dim = \"\"\ndepth = \"\"\nnum_heads = \"\"\n");
        assert_eq!((c.num_heads, c.class_token), (12, false));
        let (c, _) = upgraded(
            "name = \"vit_giant_patch14_224\"\nembed_dim = \"\"\ndepth = 2\nnum_heads = \"\"\n",
        );
        assert_eq!((c.mlp_hidden_dim, c.depth, c.class_token), (6144, 2, true));
        let (c, _) = upgraded("name = \"vit_small_patch16_reg4_gap_224\"\nnum_heads = \"\"\n");
        assert_eq!(
            (c.reg_tokens, c.no_embed_class, c.pos_embed_len()),
            (4, true, 196)
        );
    }

    #[test]
    fn a_current_section_is_left_alone() {
        let mut t: toml::Table = toml::from_str("name = \"vit_base_patch16_gap_224\"\n").unwrap();
        assert!(upgrade_model(&mut t).unwrap().is_none());
        assert_eq!(t["name"].as_str(), Some("vit_base_patch16_gap_224"));
    }
}
