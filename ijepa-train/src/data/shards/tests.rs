use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::data::loader::prepare_batch;
use crate::data::loader::tests::loader_setup;
use crate::data::{BadImages, ImageFolder, ImageSource, Loader, Position, Shard, SyntheticShapes};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ijepa-shards-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `n` synthetic PNGs spread over the classes `c0`, `c1`, `c2`.
fn image_folder(dir: &Path, n: usize) -> ImageFolder {
    let shapes = SyntheticShapes::new(16, n, 3);
    for i in 0..n {
        let class = dir.join(format!("c{}", i % 3));
        std::fs::create_dir_all(&class).unwrap();
        shapes
            .get(i)
            .0
            .save(class.join(format!("{i:02}.png")))
            .unwrap();
    }
    ImageFolder::open(dir).unwrap()
}

fn written(name: &str, n: usize, per_shard: usize) -> (PathBuf, ImageFolder, WrittenShards) {
    let dir = scratch(name);
    let folder = image_folder(&dir.join("images"), n);
    let out = write_shards(&folder, &dir.join("shards"), per_shard, 5, &mut |_| {}).unwrap();
    (dir, folder, out)
}

#[test]
fn keys_end_at_the_first_dot_of_the_file_name() {
    assert_eq!(split_key("a/b.c.d"), ("a/b", "c.d"));
    assert_eq!(split_key("x.v1/000.jpg"), ("x.v1/000", "jpg"));
    assert_eq!(split_key("plain"), ("plain", ""));
    assert_eq!(split_key("d/.hidden"), ("d/", "hidden"));
}

#[test]
fn written_shards_read_back_as_the_folder_they_came_from() {
    let (dir, folder, out) = written("round-trip", 10, 3);
    assert_eq!(out.shards.len(), 4);
    assert_eq!(out.images, 10);
    assert!(
        out.pattern.ends_with("shard-{000000..000003}.tar"),
        "{}",
        out.pattern
    );
    assert_eq!(
        std::fs::read_to_string(&out.classes).unwrap(),
        "c0\nc1\nc2\n"
    );
    let shards = TarShards::open(out.pattern.as_ref()).unwrap();
    assert!(shards.notes().is_empty(), "{:?}", shards.notes());
    assert_eq!((shards.len(), shards.num_classes()), (10, 3));
    assert_eq!(shards.paths(), out.shards.as_slice());
    // Every image of the folder comes back once, with its class.
    let mut seen = BTreeSet::new();
    for i in 0..shards.len() {
        let img = shards.load(i).unwrap();
        let f = (0..10)
            .find(|&f| crate::data::decode_rgb(&folder.files()[f]).unwrap() == img)
            .unwrap();
        assert_eq!(shards.label(i), folder.label(f));
        assert!(seen.insert(f), "image {f} twice");
        assert!(shards.name(i).contains("shard-00000") && shards.name(i).ends_with(".png"));
    }
    assert_eq!(seen.len(), 10);
    // The same folder and seed give the same bytes; another seed another order.
    let again = write_shards(&folder, &dir.join("again"), 3, 5, &mut |_| {}).unwrap();
    let other = write_shards(&folder, &dir.join("other"), 3, 6, &mut |_| {}).unwrap();
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    assert_eq!(bytes(&out.shards[0]), bytes(&again.shards[0]));
    assert_ne!(bytes(&out.shards[0]), bytes(&other.shards[0]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_epoch_reads_a_few_shards_at_a_time_in_a_seeded_order() {
    let (dir, _, out) = written("order", 40, 2); // 20 shards of 2
    let shards = TarShards::open(out.pattern.as_ref()).unwrap();
    let shard_of = |i: usize| shards.members[i].shard;
    let order = shards.epoch_order(1, 0);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..40).collect::<Vec<_>>());
    // Each run of SHARDS_MIXED × 2 images comes from SHARDS_MIXED shards.
    for run in order.chunks(SHARDS_MIXED * 2) {
        let from: BTreeSet<u32> = run.iter().map(|&i| shard_of(i)).collect();
        assert_eq!(from.len(), SHARDS_MIXED, "{run:?}");
    }
    // Shuffled together: the shards of a run interleave.
    assert!(order.chunks(SHARDS_MIXED * 2).any(|run| {
        run.windows(2)
            .filter(|w| shard_of(w[0]) != shard_of(w[1]))
            .count()
            >= SHARDS_MIXED
    }));
    assert_eq!(order, shards.epoch_order(1, 0));
    assert_ne!(order, shards.epoch_order(1, 1));
    assert_ne!(order, shards.epoch_order(2, 0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shards_resume_exactly_and_ranks_share_the_single_process_batch() {
    let (dir, _, out) = written("loader", 24, 5);
    let source = Arc::new(ImageSource::open(out.pattern.as_ref()).unwrap());
    assert!(matches!(*source, ImageSource::Shards(_)));
    let (sampler, config) = loader_setup(16, 4, 3);
    let run = |at: Position| -> Vec<crate::data::Batch> {
        Loader::start(
            source.clone(),
            sampler.clone(),
            config.clone(),
            at,
            2,
            Arc::default(),
        )
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let all = run(Position::default());
    assert_eq!(all.len(), 12);
    let resumed = run(Position { epoch: 1, batch: 2 });
    for (a, b) in all[8..].iter().zip(&resumed) {
        assert_eq!(
            (a.position, &a.images, &a.labels),
            (b.position, &b.images, &b.labels)
        );
    }
    let at = Position { epoch: 1, batch: 3 };
    let order = source.epoch_order(config.seed, at.epoch);
    let bad = BadImages::default();
    let whole = prepare_batch(&source, sampler.as_ref(), &config, &order, at, &bad).unwrap();
    let mut images = vec![];
    for rank in 0..2 {
        let mut c = config.clone();
        c.shard = Shard { rank, ranks: 2 };
        images.extend(
            prepare_batch(&source, sampler.as_ref(), &c, &order, at, &bad)
                .unwrap()
                .images,
        );
    }
    assert_eq!(images, whole.images);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shards_written_by_webdataset_read_as_it_wrote_them() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shards");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("expected.json")).unwrap()).unwrap();
    let samples = expected["samples"].as_array().unwrap();
    let shards = TarShards::open(&fixtures.join("wds-{0..1}.tar")).unwrap();
    assert_eq!(shards.len(), samples.len());
    assert_eq!(shards.num_classes(), 13);
    for (i, want) in samples.iter().enumerate() {
        let name = want["name"].as_str().unwrap();
        assert!(
            shards.name(i).ends_with(&format!(".tar:{name}")),
            "{}",
            shards.name(i)
        );
        assert_eq!(
            shards.label(i) as u64,
            want["label"].as_u64().unwrap(),
            "{name}"
        );
        let img = shards.load(i).unwrap();
        let size = [img.width() as u64, img.height() as u64];
        assert_eq!(serde_json::json!(size), want["size"], "{name}");
        if let Some(rgb) = want.get("rgb") {
            let rgb: Vec<u8> = serde_json::from_value(rgb.clone()).unwrap();
            assert_eq!(img.as_raw(), &rgb, "{name}");
        }
    }
    let notes = shards.notes().join("\n");
    assert!(notes.contains("1 images have no .cls member"), "{notes}");
    assert!(
        notes.contains("1 samples have no .jpg, .jpeg or .png member"),
        "{notes}"
    );
}

#[test]
fn damaged_and_misnamed_shards_are_named_and_what_is_readable_kept() {
    let (dir, _, out) = written("damage", 6, 3);
    // Cut inside the second shard's last image: the images before it stay.
    let cut = dir.join("cut.tar");
    let bytes = std::fs::read(&out.shards[1]).unwrap();
    let last = TarShards::open(&out.shards[1]).unwrap().members[2].clone();
    std::fs::write(&cut, &bytes[..(last.offset + last.len / 2) as usize]).unwrap();
    let list = dir.join("list.txt");
    std::fs::write(&list, format!("{}\ncut.tar\n", out.shards[0].display())).unwrap();
    let shards = TarShards::open(&list).unwrap();
    assert_eq!(shards.len(), 5);
    let notes = shards.notes().join("\n");
    assert!(
        notes.contains("1 shard(s) are cut short") && notes.contains("cut.tar"),
        "{notes}"
    );
    for i in 0..shards.len() {
        shards.load(i).unwrap();
    }
    // Not a tar at all: nothing read from it, said once.
    let junk = dir.join("junk.tar");
    std::fs::write(&junk, vec![7u8; 3000]).unwrap();
    let err = TarShards::open(&junk).unwrap_err().to_string();
    assert!(
        err.contains("no .jpg, .jpeg or .png image in 1 shard"),
        "{err}"
    );
    // Missing, a folder, a FIFO: refused by name before anything is read.
    let err = TarShards::open(&dir.join("none-{0..1}.tar"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("none-0.tar") && err.contains("No such file"),
        "{err}"
    );
    std::fs::create_dir_all(dir.join("d.tar")).unwrap();
    let err = TarShards::open(&dir.join("d.tar")).unwrap_err().to_string();
    assert!(
        err.contains("d.tar: a shard must be a regular file"),
        "{err}"
    );
    let fifo = dir.join("f.tar");
    if std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        let err = TarShards::open(&fifo).unwrap_err().to_string();
        assert!(
            err.contains("f.tar: a shard must be a regular file"),
            "{err}"
        );
    }
    // A class that is not a number names its member.
    let bad = dir.join("bad.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&bad).unwrap());
    for (name, data) in [("k.png", &bytes[..16]), ("k.cls", b"cat".as_slice())] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        builder.append_data(&mut h, name, data).unwrap();
    }
    builder.finish().unwrap();
    drop(builder);
    let err = TarShards::open(&bad).unwrap_err().to_string();
    assert!(
        err.contains("bad.tar: member k.cls holds \"cat\", expected a class number"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_data_path_decides_folder_or_shards_in_one_place() {
    let (dir, _, out) = written("dispatch", 3, 3);
    let folder = ImageSource::open(&dir.join("images")).unwrap();
    assert!(matches!(folder, ImageSource::Folder(_)));
    let one = ImageSource::open(&out.shards[0]).unwrap();
    assert!(matches!(one, ImageSource::Shards(_)));
    let list = dir.join("shards.list");
    std::fs::write(&list, "shards/shard-000000.tar\n").unwrap();
    assert_eq!(ImageSource::open(&list).unwrap().len(), 3);
    let err = ImageSource::open(&dir.join("missing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writing_refuses_zero_per_shard_and_never_replaces_a_folder() {
    let dir = scratch("refuse");
    let folder = image_folder(&dir.join("images"), 2);
    let err = write_shards(&folder, &dir.join("o"), 0, 0, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("at least 1"), "{err}");
    std::fs::create_dir_all(dir.join("o/shard-000000.tar")).unwrap();
    let err = write_shards(&folder, &dir.join("o"), 2, 0, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("shard-000000.tar"), "{err}");
    assert!(dir.join("o/shard-000000.tar").is_dir());
    std::fs::remove_dir_all(&dir).unwrap();
}
