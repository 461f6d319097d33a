//! Fuzzing of every parser of untrusted input: safetensors files, PyTorch
//! zip checkpoints and their pickles, `config.json` (timm and Hugging
//! Face), run configurations (TOML, official YAML, `--set`), image files
//! and tar shards.
//!
//! Each parser gets mutated copies of real inputs (byte flips, overwrites,
//! insertions, deletions, truncations, splices, boundary integers) and,
//! where bytes would only exercise a syntax check, structure-aware
//! mutations (random values at real JSON and configuration keys, pickles
//! re-zipped so the unpickler is reached past the zip checksums). A case
//! passes when the parser returns — a value or an error — without a panic,
//! within `CASE_SECONDS`, and allocating at most `CASE_BYTES` more than
//! before it. proptest shrinks a failing input.
//!
//! CI runs `IJEPA_FUZZ_CASES` cases per parser (default 1,000); the long
//! form (`cargo test --release -p ijepa-train --test integration fuzz:: -- --ignored`)
//! runs 100,000 per parser.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Bytes this thread has allocated and not freed, and the most it had.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|l| {
            l.set(l.get() + layout.size() as isize);
            let _ = PEAK.try_with(|p| p.set(p.get().max(l.get())));
        });
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get() - layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A case may allocate at most this much (an image header may announce
/// up to `MAX_PIXELS` RGBA pixels, 400 MB).
const CASE_BYTES: isize = 1 << 30;
/// A case must return within this time (debug build, shared cores).
const CASE_SECONDS: f64 = 20.0;

fn cases() -> u32 {
    std::env::var("IJEPA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap()
}

/// One edit of a byte string; positions and lengths are taken modulo the
/// input, so every edit applies to every input.
#[derive(Debug, Clone)]
enum Edit {
    Flip(u32, u8),
    Set(u32, u8),
    Insert(u32, Vec<u8>),
    Delete(u32, u16),
    Truncate(u32),
    /// Copy `len` bytes from `from` to `to`.
    Splice(u32, u32, u16),
    /// A boundary integer (0, 1, -1, 2^31, 2^63, …) as `width` LE bytes.
    Boundary(u32, u8, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<u32>(), 0u8..8).prop_map(|(p, b)| Edit::Flip(p, b)),
        (any::<u32>(), any::<u8>()).prop_map(|(p, v)| Edit::Set(p, v)),
        (any::<u32>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, v)| Edit::Insert(p, v)),
        (any::<u32>(), 1u16..64).prop_map(|(p, n)| Edit::Delete(p, n)),
        any::<u32>().prop_map(Edit::Truncate),
        (any::<u32>(), any::<u32>(), 1u16..256).prop_map(|(a, b, n)| Edit::Splice(a, b, n)),
        (
            any::<u32>(),
            prop_oneof![Just(1u8), Just(2), Just(4), Just(8)],
            0u8..8
        )
            .prop_map(|(p, w, k)| Edit::Boundary(p, w, k)),
    ]
}

/// Positions near the start are what headers are made of: half the edits
/// land in the first `head` bytes.
fn apply(mut data: Vec<u8>, edits: &[Edit], head: usize) -> Vec<u8> {
    let at = |p: u32, len: usize| -> usize {
        if len == 0 {
            return 0;
        }
        let span = if p.is_multiple_of(2) {
            head.min(len)
        } else {
            len
        };
        (p as usize / 2) % span.max(1)
    };
    for e in edits {
        let len = data.len();
        match e {
            Edit::Flip(p, b) if len > 0 => {
                let i = at(*p, len);
                data[i] ^= 1 << b;
            }
            Edit::Set(p, v) if len > 0 => {
                let i = at(*p, len);
                data[i] = *v;
            }
            Edit::Insert(p, v) => {
                let i = at(*p, len + 1).min(len);
                data.splice(i..i, v.iter().copied());
            }
            Edit::Delete(p, n) if len > 0 => {
                let i = at(*p, len);
                let end = (i + *n as usize).min(len);
                data.drain(i..end);
            }
            Edit::Truncate(p) => data.truncate(at(*p, len + 1)),
            Edit::Splice(a, b, n) if len > 0 => {
                let (from, to) = (at(*a, len), at(*b, len));
                let n = (*n as usize).min(len - from).min(len - to);
                let chunk = data[from..from + n].to_vec();
                data[to..to + n].copy_from_slice(&chunk);
            }
            Edit::Boundary(p, w, k) if len >= *w as usize => {
                let values: [u64; 8] = [
                    0,
                    1,
                    u64::MAX,
                    0x7fff_ffff,
                    0x8000_0000,
                    u64::MAX >> 1,
                    1 << 63,
                    0xffff_fffe,
                ];
                let bytes = values[*k as usize].to_le_bytes();
                let i = at(*p, len - *w as usize + 1);
                data[i..i + *w as usize].copy_from_slice(&bytes[..*w as usize]);
            }
            _ => {}
        }
    }
    data
}

/// Runs `parse` on `cases` mutations of the `corpus`; panics, overlong
/// cases and allocations past `CASE_BYTES` fail (and shrink).
fn fuzz(name: &str, corpus: &[Vec<u8>], head: usize, cases: u32, parse: impl Fn(&[u8])) {
    let strategy = (0..corpus.len(), proptest::collection::vec(edit(), 0..8));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let (slowest, most) = (Cell::new(0f64), Cell::new(0isize));
    let result = runner.run(&strategy, |(i, edits)| {
        let input = apply(corpus[i].clone(), &edits, head);
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        let start = Instant::now();
        parse(&input);
        let secs = start.elapsed().as_secs_f64();
        let grew = PEAK.with(Cell::get) - base;
        slowest.set(slowest.get().max(secs));
        most.set(most.get().max(grew));
        prop_assert!(secs < CASE_SECONDS, "{name}: a case took {secs:.1} s");
        prop_assert!(grew < CASE_BYTES, "{name}: a case allocated {grew} bytes");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    eprintln!(
        "fuzz {name}: {cases} cases, 0 panics, slowest {:.1} ms, most allocated {:.1} MiB",
        slowest.get() * 1e3,
        most.get() as f64 / (1 << 20) as f64
    );
}

fn safetensors(cases: u32) {
    let corpus: Vec<Vec<u8>> = ["timm_cls", "timm_gap", "hf_ijepa"]
        .iter()
        .map(|f| {
            read(&format!(
                "ijepa-encoder/tests/fixtures/{f}/model.safetensors"
            ))
        })
        .collect();
    fuzz("safetensors", &corpus, 4096, cases, |b| {
        let _ = ijepa_encoder::weights::parse_safetensors(b, Path::new("fuzz.safetensors"));
    });
}

fn pytorch_zip(cases: u32) {
    let corpus: Vec<Vec<u8>> = [
        "official/official.pth.tar",
        "pth_variants/shared.pth.tar",
        "pth_variants/views.pth.tar",
        "pth_variants/legacy.pth.tar",
    ]
    .iter()
    .map(|f| read(&format!("ijepa-encoder/tests/fixtures/{f}")))
    .collect();
    fuzz("pytorch zip", &corpus, 1 << 20, cases, |b| {
        let _ = ijepa_encoder::weights::read_pytorch(
            std::io::Cursor::new(b),
            Some("target_encoder"),
            Path::new("fuzz.pth.tar"),
        );
    });
}

/// The entries of a zip, as (name, bytes).
fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut data = vec![];
            f.read_to_end(&mut data).unwrap();
            (f.name().unwrap().into_owned(), data)
        })
        .collect()
}

fn rezip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// `archive` zipped back with `pkl` as its `data.pkl`.
fn with_pickle(archive: &[(String, Vec<u8>)], pkl: &[u8]) -> Vec<u8> {
    let entries: Vec<(String, Vec<u8>)> = archive
        .iter()
        .map(|(n, d)| {
            let data = if n.ends_with("/data.pkl") { pkl } else { d };
            (n.clone(), data.to_vec())
        })
        .collect();
    rezip(&entries)
}

fn pickle(cases: u32) {
    // The pickles of real checkpoints, mutated and zipped back with their
    // storages, so every case reaches the unpickler.
    let archives: Vec<Vec<(String, Vec<u8>)>> = [
        "official/official.pth.tar",
        "pth_variants/shared.pth.tar",
        "pth_variants/views.pth.tar",
    ]
    .iter()
    .map(|f| unzip(&read(&format!("ijepa-encoder/tests/fixtures/{f}"))))
    .collect();
    let pickles: Vec<Vec<u8>> = archives
        .iter()
        .map(|a| {
            a.iter()
                .find(|(n, _)| n.ends_with("/data.pkl"))
                .unwrap()
                .1
                .clone()
        })
        .collect();
    let tagged: Vec<Vec<u8>> = pickles
        .iter()
        .enumerate()
        .map(|(i, p)| [&[i as u8][..], p].concat())
        .collect();
    fuzz("pickle", &tagged, 1 << 20, cases, |b| {
        let Some((&i, pkl)) = b.split_first() else {
            return;
        };
        let Some(archive) = archives.get(i as usize) else {
            return;
        };
        let _ = ijepa_encoder::weights::read_pytorch(
            std::io::Cursor::new(with_pickle(archive, pkl)),
            Some("target_encoder"),
            Path::new("fuzz.pth.tar"),
        );
    });
}

/// Random JSON values, from the ones a field should hold to absurd ones.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let leaf = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(3),
            Just(14),
            Just(16),
            Just(224),
            Just(u64::MAX)
        ]
        .prop_map(|n| json!(n)),
        prop_oneof![
            Just(0.0),
            Just(-1.0),
            Just(1e300),
            Just(0.875),
            Just(f64::MIN_POSITIVE)
        ]
        .prop_map(|x| json!(x)),
        "[a-z_]{0,12}".prop_map(|s| json!(s)),
        prop_oneof![
            Just("vit_base_patch16_224"),
            Just("avg"),
            Just("token"),
            Just("gelu"),
            Just("ijepa")
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::vec(("[a-z_]{1,8}", inner), 0..3)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Every path to a value in `v`, e.g. `["pretrained_cfg", "mean"]`.
fn paths(v: &serde_json::Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    if let serde_json::Value::Object(m) = v {
        for (k, child) in m {
            let mut p = prefix.clone();
            p.push(k.clone());
            out.push(p.clone());
            paths(child, p, out);
        }
    }
}

fn config_json(cases: u32) {
    let texts: Vec<Vec<u8>> = [
        "timm_cls",
        "timm_gap",
        "timm_fcnorm",
        "hf_ijepa",
        "hf_ijepa_v4",
    ]
    .iter()
    .map(|f| read(&format!("ijepa-encoder/tests/fixtures/{f}/config.json")))
    .collect();
    let parse = |b: &[u8]| {
        if let Ok(text) = std::str::from_utf8(b) {
            let _ = ijepa_encoder::weights::parse_config(text, Path::new("config.json"));
        }
    };
    fuzz("config.json (bytes)", &texts, 1 << 16, cases, parse);
    // Random values at the real keys (and new keys), so the field checks run.
    let docs: Vec<serde_json::Value> = texts
        .iter()
        .map(|t| serde_json::from_slice(t).unwrap())
        .collect();
    let strategy = (
        0..docs.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), json_value()), 1..4),
    );
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |(i, changes)| {
        let mut doc = docs[i].clone();
        for (pick, value) in changes {
            let mut all = vec![];
            paths(&doc, vec![], &mut all);
            let path = pick.get(&all).clone();
            let mut node = &mut doc;
            for key in &path[..path.len() - 1] {
                node = &mut node[key.as_str()];
            }
            node[path[path.len() - 1].as_str()] = value;
        }
        let _ = ijepa_encoder::weights::parse_config(&doc.to_string(), Path::new("config.json"));
        Ok(())
    });
    if let Err(e) = result {
        panic!("config.json (fields): {e}");
    }
    eprintln!("fuzz config.json (fields): {cases} cases, 0 panics");
}

fn toml_config(cases: u32) {
    let default = ijepa_train::TrainConfig::default().to_toml().unwrap();
    let corpus = vec![
        default.into_bytes(),
        b"[optim]\nepochs = 3\n[data]\nbatch_size = 2\n".to_vec(),
    ];
    fuzz("TOML", &corpus, 1 << 16, cases, |b| {
        if let Ok(text) = std::str::from_utf8(b) {
            if let Ok(cfg) = ijepa_train::TrainConfig::from_toml_str(text) {
                let _ = cfg.validate();
            }
        }
    });
}

fn yaml_config(cases: u32) {
    let corpus = vec![read(
        "ijepa-train/tests/fixtures/official_vith14_ep300.yaml",
    )];
    fuzz("official YAML", &corpus, 1 << 16, cases, |b| {
        if let Ok(text) = std::str::from_utf8(b) {
            if let Ok((cfg, _)) = ijepa_train::run::official::from_yaml_str(text, 1) {
                let _ = cfg.validate();
            }
        }
    });
}

fn set_overrides(cases: u32) {
    // Every real key, with random values; and random key=value bytes.
    let default = ijepa_train::TrainConfig::default();
    let table: toml::Table = toml::from_str(&default.to_toml().unwrap()).unwrap();
    let mut keys = vec![];
    for (section, v) in &table {
        if let Some(t) = v.as_table() {
            keys.extend(t.keys().map(|k| format!("{section}.{k}")));
        }
    }
    let values = prop_oneof![
        Just(String::new()),
        Just("\"\"".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        prop_oneof![
            Just("0"),
            Just("-1"),
            Just("1e400"),
            Just("nan"),
            Just("inf"),
            Just("[0.3, 1.0]"),
            Just("[1e9, -1e9]"),
            Just("true"),
            Just("\"x\""),
            Just("[[1]]"),
            Just("{a = 1}")
        ]
        .prop_map(str::to_string),
        "[ -~]{0,24}",
    ];
    let strategy = proptest::collection::vec((proptest::sample::select(keys), values), 1..4);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |sets| {
        let mut cfg = default.clone();
        for (k, v) in sets {
            let _ = cfg.set(&format!("{k}={v}"));
        }
        let _ = cfg.validate();
        Ok(())
    });
    if let Err(e) = result {
        panic!("--set: {e}");
    }
    let corpus = vec![
        b"optim.lr=1e-3".to_vec(),
        b"data.crop_scale=[0.3, 1.0]".to_vec(),
        b"model.args.depth=".to_vec(),
    ];
    fuzz("--set (bytes)", &corpus, 64, cases, |b| {
        if let Ok(text) = std::str::from_utf8(b) {
            let mut cfg = ijepa_train::TrainConfig::default();
            let _ = cfg.set(text);
            let _ = cfg.validate();
        }
    });
    eprintln!("fuzz --set (keys): {cases} cases, 0 panics");
}

fn images(cases: u32) {
    let mut corpus: Vec<Vec<u8>> = ["img2.png", "img3.png", "img4.png"]
        .iter()
        .map(|f| read(&format!("ijepa-cli/tests/fixtures/embed_images/{f}")))
        .collect();
    let mut jpeg = vec![];
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 128]))
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    corpus.push(jpeg);
    fuzz("image headers", &corpus, 256, cases, |b| {
        let _ = ijepa_train::data::decode_rgb_bytes(b, Path::new("fuzz.img"));
    });
}

/// Tar shards: WebDataset's own and a PAX long name; each case is written
/// to a file, indexed and every image it finds read.
fn tar_shards(cases: u32) {
    let corpus: Vec<Vec<u8>> = ["wds-0.tar", "wds-1.tar"]
        .iter()
        .map(|f| read(&format!("ijepa-train/tests/fixtures/shards/{f}")))
        .collect();
    let path = std::env::temp_dir().join(format!("ijepa-fuzz-{}.tar", std::process::id()));
    fuzz("tar shards", &corpus, 4096, cases, |b| {
        std::fs::write(&path, b).unwrap();
        if let Ok(shards) = ijepa_train::data::TarShards::open(&path) {
            for i in 0..shards.len() {
                let _ = shards.load(i);
            }
        }
    });
    let _ = std::fs::remove_file(&path);
}

/// Official training checkpoints to continue: the pickle of one written by
/// the official train.py, mutated (the AdamW state's groups, numbers,
/// steps and tensors) and zipped back with its storages; each case is
/// written to a file and read as `run.resume_from` reads it.
fn official_checkpoint(cases: u32) {
    let archive = unzip(&read(
        "ijepa-train/tests/fixtures/official_run/epoch1.pth.tar",
    ));
    let pkl = archive
        .iter()
        .find(|(n, _)| n.ends_with("/data.pkl"))
        .unwrap()
        .1
        .clone();
    let path = std::env::temp_dir().join(format!("ijepa-fuzz-{}.pth.tar", std::process::id()));
    let run = ijepa_encoder::VitConfig::from_timm_name("vit_tiny_patch16_224").unwrap();
    fuzz("official checkpoint", &[pkl], 1 << 20, cases, |b| {
        std::fs::write(&path, with_pickle(&archive, b)).unwrap();
        let _ = ijepa_train::run::official_checkpoint::OfficialCheckpoint::load(
            &path,
            Some(&run),
            &candle_core::Device::Cpu,
        );
    });
    let _ = std::fs::remove_file(&path);
}

macro_rules! parsers {
    ($($short:ident, $long:ident => $f:ident;)*) => {
        $(
            #[test]
            fn $short() {
                $f(cases());
            }

            #[test]
            #[ignore = "long form: 100,000 cases"]
            fn $long() {
                $f(100_000);
            }
        )*
    };
}

parsers! {
    fuzz_safetensors, fuzz_safetensors_long => safetensors;
    fuzz_pytorch_zip, fuzz_pytorch_zip_long => pytorch_zip;
    fuzz_pickle, fuzz_pickle_long => pickle;
    fuzz_config_json, fuzz_config_json_long => config_json;
    fuzz_toml, fuzz_toml_long => toml_config;
    fuzz_yaml, fuzz_yaml_long => yaml_config;
    fuzz_set, fuzz_set_long => set_overrides;
    fuzz_images, fuzz_images_long => images;
    fuzz_tar_shards, fuzz_tar_shards_long => tar_shards;
    fuzz_official_checkpoint, fuzz_official_checkpoint_long => official_checkpoint;
}
