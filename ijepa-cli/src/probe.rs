//! `ijepa-cli probe`: k-NN and linear probes of a frozen encoder on
//! labelled image folders.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ijepa_encoder::weights::DataConfig;
use ijepa_train::data::ImageFolder;
use ijepa_train::probe::{
    knn, linear, spread, Accuracy, FeatureFile, FeatureWriter, LinearSchedule, Rows,
};
use serde_json::json;

use crate::encoder_source::{load_encoder, Which};
use crate::features::{eval_transform, extract, extract_into, transform};

/// `--weights` of the raw-pixel baseline.
const PIXELS: &str = "pixels";

/// Which probes to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// Weighted k-NN on cosine similarity.
    Knn,
    /// Logistic regression on standardised features.
    Linear,
    /// Both.
    Both,
}

/// Options of `ijepa-cli probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The encoder: an ijepa-rs run directory or checkpoint, a timm or Hugging
    /// Face folder, a .safetensors file, an official .pth.tar, or hf-hub:org/name;
    /// or `pixels`: the normalised pixels themselves at --image-size (ImageNet
    /// mean, std and crop unless set), the baseline an encoder must beat.
    #[arg(long)]
    weights: String,
    /// Labelled training images: one sub-folder per class.
    #[arg(long)]
    train: PathBuf,
    /// Labelled evaluation images, with the training set's class folders.
    #[arg(long)]
    val: PathBuf,
    /// Probes to run.
    #[arg(long, value_enum, default_value_t = Method::Both)]
    method: Method,
    /// Encoder of a training checkpoint (the paper probes the target encoder).
    #[arg(long, value_enum, default_value_t = Which::Target)]
    encoder: Which,
    /// timm model name for what the weights do not say.
    #[arg(long)]
    model: Option<String>,
    /// Concatenate the mean-pooled patch tokens of the last K blocks (1 to the depth).
    #[arg(long, default_value_t = 1)]
    last_layers: usize,
    /// Neighbours of the k-NN probe (at least 1).
    #[arg(long, default_value_t = 20)]
    k: usize,
    /// Temperature of the k-NN votes (a finite number > 0).
    #[arg(long, default_value_t = 0.07)]
    temperature: f64,
    /// AdamW steps of the linear probe (at least 1).
    #[arg(long, default_value_t = 300)]
    linear_steps: usize,
    /// Training rows per linear-probe step, drawn from a seeded shuffle
    /// (default: all of them, full batch; large sets: e.g. 4096 with
    /// --linear-steps 3000).
    #[arg(long)]
    linear_batch: Option<usize>,
    /// Extract the features once into this folder (train.f32/.json,
    /// val.f32/.json; reused by later probes of the same settings) and probe
    /// from there a chunk at a time: memory that does not grow with the set.
    #[arg(long)]
    features: Option<PathBuf>,
    /// At most this many images of each folder, spread evenly over it (so
    /// every class keeps its share).
    #[arg(long)]
    max_images: Option<usize>,
    #[command(flatten)]
    transform: crate::features::TransformArgs,
    /// Images per forward pass (1 to 4,096).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Where the encoder runs (cpu, cuda or cuda:N); the probes run on the CPU.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Labels of `folder`'s images by class name, numbered as in `classes`.
fn labels(folder: &ImageFolder, classes: &[String]) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(folder.files().len());
    for f in folder.files() {
        let rel = f.strip_prefix(folder.root()).unwrap_or(f);
        let name = match (rel.components().next(), rel.components().nth(1)) {
            (Some(first), Some(_)) => first.as_os_str().to_string_lossy().into_owned(),
            _ => String::new(),
        };
        let label = classes.binary_search(&name).map_err(|_| {
            anyhow::anyhow!(
                "{}: class {name:?} is not among the training classes {classes:?}",
                f.display()
            )
        })?;
        out.push(label);
    }
    Ok(out)
}

/// Runs `ijepa-cli probe`.
pub fn run(args: &ProbeArgs) -> Result<()> {
    crate::features::check_batch(args.batch_size)?;
    let device = crate::encoder_source::open_device(&args.device)?;
    if matches!(args.method, Method::Knn | Method::Both) {
        ijepa_train::probe::check_knn(args.k, args.temperature)?;
    }
    if matches!(args.method, Method::Linear | Method::Both) {
        ijepa_train::probe::check_linear(args.linear_steps)?;
        anyhow::ensure!(
            args.linear_batch != Some(0),
            "--linear-batch 0: a mini-batch holds at least 1 row"
        );
    }
    anyhow::ensure!(
        args.max_images != Some(0),
        "--max-images 0: a probe needs at least 1 image of each folder"
    );
    let started = Instant::now();
    let (encoder, transform, (layout, source)) = match args.weights.as_str() {
        PIXELS => {
            anyhow::ensure!(
                args.last_layers == 1,
                "--last-layers {} asks for encoder blocks: --weights pixels has none",
                args.last_layers
            );
            let size = args.transform.image_size().ok_or_else(|| {
                anyhow::anyhow!("--weights pixels needs --image-size (the pixels' square size)")
            })?;
            let data = DataConfig::imagenet((size, size));
            (
                None,
                transform(&data, &args.transform)?,
                ("pixels", String::new()),
            )
        }
        spec => {
            let enc = load_encoder(spec, args.model.as_deref(), args.encoder)?;
            let vit = enc.build(&device)?;
            vit.check_last_layers(args.last_layers)
                .context("--last-layers")?;
            let transform = eval_transform(&enc.data, &args.transform, &enc.config)?;
            (
                Some(vit),
                transform,
                (enc.layout, enc.path.display().to_string()),
            )
        }
    };
    let train = ImageFolder::open(&args.train)?;
    let val = ImageFolder::open(&args.val)?;
    for note in train.notes().iter().chain(val.notes()) {
        eprintln!("note: {note}");
    }
    let classes = train.classes().to_vec();
    anyhow::ensure!(
        classes.len() >= 2,
        "{}: a probe needs at least 2 class sub-folders, found {classes:?}",
        args.train.display()
    );
    let train_labels = labels(&train, &classes)?;
    let val_labels = labels(&val, &classes)?;
    // What made the features: a feature folder holding others is not reused.
    let made_by = format!(
        "weights {} ({layout} {source}), encoder {:?}, last layers {}, {}",
        args.weights,
        args.encoder,
        args.last_layers,
        transform.describe()
    );
    let mut sets: Vec<(Box<dyn Rows>, Vec<usize>, usize)> = vec![];
    for (name, folder, all_labels) in [("train", &train, &train_labels), ("val", &val, &val_labels)]
    {
        let picked = match args.max_images {
            Some(max) => spread(folder.files().len(), max),
            None => (0..folder.files().len()).collect(),
        };
        let files: Vec<PathBuf> = picked.iter().map(|&i| folder.files()[i].clone()).collect();
        let label_of = |read: &[usize]| -> Vec<usize> {
            read.iter().map(|&i| all_labels[picked[i]]).collect()
        };
        let context = || format!("{name} images in {}", folder.root().display());
        let Some(dir) = &args.features else {
            eprintln!("features of {} {name} images…", files.len());
            let f = extract(
                encoder.as_ref(),
                &transform,
                &files,
                args.batch_size,
                args.last_layers,
                false,
            )
            .with_context(context)?;
            sets.push((Box::new(f.pooled), label_of(&f.read), f.skipped.len()));
            continue;
        };
        // What made them, then the images they were made from: settings
        // that differ are refused; images that changed are extracted again.
        let source = format!(
            "{made_by}; {} images of {} ({})",
            files.len(),
            folder.root().display(),
            ijepa_train::probe::fingerprint(&files)?
        );
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Some(f) = FeatureFile::open(dir, name)? {
            let json = dir.join(format!("{name}.json"));
            if f.meta().source == source {
                eprintln!(
                    "features of {name} images: {} (extracted before)",
                    dir.display()
                );
                let (labels, skipped) = (f.meta().labels.clone(), f.meta().skipped);
                sets.push((Box::new(f), labels, skipped));
                continue;
            }
            anyhow::ensure!(
                f.meta().source.starts_with(&format!("{made_by};")),
                "{}: features of other settings ({}); this probe needs ({source}): \
                 remove {name}.json and {name}.f32, or choose another --features folder",
                json.display(),
                f.meta().source
            );
            eprintln!(
                "note: {}: the {name} images changed since their features were extracted ({}); extracting them again",
                json.display(),
                f.meta().source.rsplit_once("; ").map_or("", |(_, data)| data)
            );
        }
        eprintln!(
            "features of {} {name} images → {}…",
            files.len(),
            dir.display()
        );
        let mut writer = FeatureWriter::create(dir, name)?;
        let ijepa_train::probe::Extracted { read, skipped } = extract_into(
            encoder.as_ref(),
            &transform,
            &files,
            args.batch_size,
            args.last_layers,
            &mut |pooled, _| writer.append(&pooled),
        )
        .with_context(context)?;
        let labels = label_of(&read);
        let f = writer.finish(labels.clone(), skipped.len(), source)?;
        sets.push((Box::new(f), labels, skipped.len()));
    }
    let [(xtr, ytr, skipped_train), (xval, yval, skipped_val)] =
        <[_; 2]>::try_from(sets).map_err(|_| anyhow::anyhow!("two feature sets"))?;
    let (xtr, xval) = (xtr.as_ref(), xval.as_ref());
    let mut results = serde_json::Map::new();
    if matches!(args.method, Method::Knn | Method::Both) {
        let acc = knn(xtr, &ytr, xval, &yval, args.k, args.temperature)?;
        results.insert("knn".into(), json!({"k": args.k, "temperature": args.temperature, "top1": acc.top1, "top5": acc.top5}));
    }
    if matches!(args.method, Method::Linear | Method::Both) {
        let schedule = LinearSchedule {
            steps: args.linear_steps,
            batch: args.linear_batch,
            seed: 0,
        };
        let acc = linear(xtr, &ytr, xval, &yval, schedule)?;
        results.insert(
            "linear".into(),
            json!({"steps": args.linear_steps, "batch": args.linear_batch, "top1": acc.top1, "top5": acc.top5}),
        );
    }
    let report = json!({
        "weights": args.weights, "layout": layout, "source": source,
        "classes": classes.len(), "train_images": ytr.len(), "val_images": yval.len(),
        "skipped": skipped_train + skipped_val, "feature_dim": xtr.dim(),
        "last_layers": args.last_layers, "seconds": started.elapsed().as_secs_f64(),
        "results": results,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let what = match (encoder.is_some(), args.last_layers) {
        (false, _) => "normalised pixels".to_string(),
        (true, 1) => "mean-pooled patch tokens".to_string(),
        (true, n) => format!("mean-pooled patch tokens, last {n} blocks"),
    };
    println!(
        "{} ({} layout): {} classes, {} train / {} val images, features of dimension {} ({what})",
        args.weights,
        layout,
        classes.len(),
        ytr.len(),
        yval.len(),
        xtr.dim(),
    );
    let show = |name: &str, acc: Accuracy| {
        let top5 = acc
            .top5
            .map_or(String::new(), |t| format!(", top-5 {:.1} %", 100.0 * t));
        println!("{name}: top-1 {:.1} %{top5}", 100.0 * acc.top1);
    };
    for (name, v) in &results {
        let acc = Accuracy {
            top1: v["top1"].as_f64().unwrap_or(f64::NAN),
            top5: v["top5"].as_f64(),
        };
        let label = if name == "knn" {
            format!("k-NN (k = {}, T = {})", args.k, args.temperature)
        } else {
            match args.linear_batch {
                Some(b) => format!("linear ({} steps of {b} rows)", args.linear_steps),
                None => format!("linear ({} steps)", args.linear_steps),
            }
        };
        show(&label, acc);
    }
    if skipped_train + skipped_val > 0 {
        println!("{} unreadable images skipped", skipped_train + skipped_val);
    }
    Ok(())
}
