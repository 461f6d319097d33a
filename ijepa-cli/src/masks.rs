//! `ijepa-cli masks`: draw masks with either recipe and summarise them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ijepa_masking::{Grid, MaskBatch, MaskConfig, MaskSampler};
use serde::Serialize;

/// Which masking recipe to sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Recipe {
    /// The paper's multi-block masks (facebookresearch/ijepa).
    Official,
    /// stable-pretraining's `IJEPAMasking` variant.
    Seed,
}

impl From<Recipe> for ijepa_train::model::Recipe {
    fn from(r: Recipe) -> Self {
        match r {
            Recipe::Official => Self::Official,
            Recipe::Seed => Self::Seed,
        }
    }
}

/// Options of `ijepa-cli masks`.
#[derive(Debug, Args)]
pub struct MasksArgs {
    /// Patch grid, HxW or TxHxW (224 px with patch 16 → 14x14; patch 14 → 16x16).
    #[arg(long, default_value = "14x14")]
    grid: String,
    /// Images per batch (at most 65,536).
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Batches to draw (at most 1,000,000).
    #[arg(long, default_value_t = 100)]
    batches: u64,
    /// Masking recipe.
    #[arg(long, value_enum, default_value_t = Recipe::Official)]
    recipe: Recipe,
    /// Reproduce the official collator's biases exactly (official recipe only).
    #[arg(long)]
    official_compat: bool,
    /// Target blocks per image [default: 4, the paper's].
    #[arg(long)]
    num_targets: Option<usize>,
    /// Fraction of the patches per target block, LO,HI [default: 0.15,0.2].
    #[arg(long, value_parser = parse_range)]
    target_scale: Option<(f64, f64)>,
    /// Context block scale (official), or kept fraction of the non-target
    /// patches (seed), LO,HI [default: 0.85,1.0].
    #[arg(long, value_parser = parse_range)]
    context_scale: Option<(f64, f64)>,
    /// Fewest patches a context keeps (official recipe only) [default: 10].
    #[arg(long)]
    min_keep: Option<usize>,
    /// Seed of the mask streams.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Draw the first batch's first images (up to 8) to this PNG file.
    #[arg(long)]
    png: Option<PathBuf>,
}

/// Min / mean / max of a per-batch quantity.
#[derive(Debug, Serialize, PartialEq)]
struct Summary {
    min: usize,
    mean: f64,
    max: usize,
}

impl Summary {
    fn of(values: &[usize]) -> Self {
        Self {
            min: values.iter().copied().min().unwrap_or(0),
            mean: values.iter().sum::<usize>() as f64 / values.len().max(1) as f64,
            max: values.iter().copied().max().unwrap_or(0),
        }
    }
}

/// What `masks` reports.
#[derive(Debug, Serialize)]
struct Report {
    recipe: Recipe,
    official_compat: bool,
    grid: String,
    batch: usize,
    batches: u64,
    seed: u64,
    /// Context masks per image and target masks per image.
    contexts_per_image: usize,
    targets_per_image: usize,
    /// Kept context length per batch (after collation).
    context_len: Summary,
    /// Mean context length before collation cut it to the batch minimum.
    context_len_before_collation: f64,
    /// Target length per batch.
    target_len: Summary,
    /// Fraction of grid positions that were ever context / ever target.
    context_coverage: f64,
    target_coverage: f64,
    /// Context masks whose target constraints had to be relaxed.
    relaxed_contexts: usize,
    /// Batches in which some context shares a patch with a target.
    batches_with_overlap: usize,
    /// Target blocks that could not be placed (seed recipe).
    dropped_target_blocks: usize,
    /// Mask sets (one image's contexts and targets) per second, one thread.
    sets_per_second: f64,
}

/// Most images per batch `masks` draws (the paper's global batch is 2,048).
const MAX_BATCH: usize = 65_536;
/// Most batches `masks` draws.
const MAX_BATCHES: u64 = 1_000_000;

/// `LO,HI` as two numbers.
fn parse_range(s: &str) -> std::result::Result<(f64, f64), String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    match parts.as_slice() {
        [lo, hi] => match (lo.parse(), hi.parse()) {
            (Ok(lo), Ok(hi)) => Ok((lo, hi)),
            _ => Err(format!("{s:?} is not two numbers LO,HI")),
        },
        _ => Err(format!("{s:?} is not LO,HI (e.g. 0.15,0.2)")),
    }
}

fn sampler(args: &MasksArgs, grid: Grid) -> Result<Box<dyn MaskSampler>> {
    if args.recipe == Recipe::Seed {
        for (set, flag) in [
            (args.official_compat, "--official-compat"),
            (args.min_keep.is_some(), "--min-keep"),
        ] {
            anyhow::ensure!(!set, "{flag} applies to --recipe official only");
        }
    }
    let d = MaskConfig::default();
    let config = MaskConfig {
        num_targets: args.num_targets.unwrap_or(d.num_targets),
        target_scale: args.target_scale.unwrap_or(d.target_scale),
        context_scale: args.context_scale.unwrap_or(d.context_scale),
        min_keep: args.min_keep.unwrap_or(d.min_keep),
        official_compat: args.official_compat,
        ..d
    };
    let recipe = ijepa_train::model::Recipe::from(args.recipe);
    Ok(config.build(grid, recipe.sampler_kind(), args.seed)?)
}

/// Runs `ijepa-cli masks`.
pub fn run(args: &MasksArgs) -> Result<()> {
    let grid: Grid = args.grid.parse()?;
    anyhow::ensure!(
        (1..=MAX_BATCH).contains(&args.batch),
        "--batch {} is out of range: 1 to {MAX_BATCH} images",
        args.batch
    );
    anyhow::ensure!(
        (1..=MAX_BATCHES).contains(&args.batches),
        "--batches {} is out of range: 1 to {MAX_BATCHES}",
        args.batches
    );
    let sampler = sampler(args, grid)?;
    if let Some(png) = &args.png {
        ijepa_encoder::io::output::check(png)?;
    }

    let n = grid.num_patches();
    let mut context_seen = vec![false; n];
    let mut target_seen = vec![false; n];
    let (mut context_len, mut target_len) = (vec![], vec![]);
    let mut before_collation = 0.0;
    let (mut relaxed, mut overlap_batches, mut dropped) = (0, 0, 0);
    let mut first: Option<MaskBatch> = None;
    let mut sampling = Duration::ZERO;
    let (mut contexts_per_image, mut targets_per_image) = (0, 0);

    for b in 0..args.batches {
        let start = Instant::now();
        let masks = sampler.sample(args.batch, b);
        sampling += start.elapsed();

        contexts_per_image = masks.contexts.len();
        targets_per_image = masks.targets.len();
        context_len.push(masks.contexts.first().map_or(0, |c| c.len()));
        target_len.push(masks.targets.first().map_or(0, |t| t.len()));
        before_collation += masks.stats.context_len_mean;
        relaxed += masks.stats.relaxed_contexts;
        overlap_batches += usize::from(masks.stats.context_overlaps_targets);
        dropped += masks.stats.dropped_target_blocks;
        for (seen, masks) in [
            (&mut context_seen, &masks.contexts),
            (&mut target_seen, &masks.targets),
        ] {
            for &i in masks.iter().flat_map(|m| m.as_flat()) {
                seen[i as usize] = true;
            }
        }
        if first.is_none() {
            first = Some(masks);
        }
    }

    let coverage = |seen: &[bool]| seen.iter().filter(|&&s| s).count() as f64 / n as f64;
    let report = Report {
        recipe: args.recipe,
        official_compat: args.official_compat,
        grid: grid.to_string(),
        batch: args.batch,
        batches: args.batches,
        seed: args.seed,
        contexts_per_image,
        targets_per_image,
        context_len: Summary::of(&context_len),
        context_len_before_collation: before_collation / args.batches as f64,
        target_len: Summary::of(&target_len),
        context_coverage: coverage(&context_seen),
        target_coverage: coverage(&target_seen),
        relaxed_contexts: relaxed,
        batches_with_overlap: overlap_batches,
        dropped_target_blocks: dropped,
        sets_per_second: (args.batch as u64 * args.batches) as f64
            / sampling.as_secs_f64().max(1e-9),
    };

    if let (Some(path), Some(masks)) = (&args.png, &first) {
        crate::masks_png::write(path, &grid, masks)
            .with_context(|| format!("writing mask picture {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

fn print_text(r: &Report) {
    let compat = if r.official_compat {
        " (official_compat)"
    } else {
        ""
    };
    println!(
        "{:?} masks{compat} on a {} grid: {} batches of {}, seed {}",
        r.recipe, r.grid, r.batches, r.batch, r.seed
    );
    println!(
        "  per image       {} context mask(s), {} target mask(s)",
        r.contexts_per_image, r.targets_per_image
    );
    let line = |name: &str, s: &Summary| {
        println!(
            "  {name:<15} mean {:.2}  min {}  max {}",
            s.mean, s.min, s.max
        )
    };
    line("context length", &r.context_len);
    println!(
        "  {:<15} mean {:.2} (before cutting to the batch minimum)",
        "", r.context_len_before_collation
    );
    line("target length", &r.target_len);
    println!(
        "  coverage        context {:.1} %, targets {:.1} % of grid positions",
        100.0 * r.context_coverage,
        100.0 * r.target_coverage
    );
    println!(
        "  relaxed         {} context(s); {} batch(es) with context/target overlap; {} dropped target block(s)",
        r.relaxed_contexts, r.batches_with_overlap, r.dropped_target_blocks
    );
    println!(
        "  speed           {:.0} mask sets/s (one thread)",
        r.sets_per_second
    );
}
