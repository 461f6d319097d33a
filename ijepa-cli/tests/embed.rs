//! `ijepa-cli embed` against timm on the same weights and image files.
//!
//! `tests/fixtures/make_embed_fixture.py` prepared the PNGs in
//! `embed_images/` with timm's own evaluation transform (PIL) and ran the
//! timm_gap encoder fixture of ijepa-encoder; tolerance 1e-4 (f32).

use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::SafeTensors;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn encoder(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ijepa-encoder/tests/fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ijepa-cli-embed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn floats(st: &SafeTensors, key: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(key).unwrap();
    let data = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (t.shape().to_vec(), data)
}

fn embed(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ijepa-cli"))
        .arg("embed")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn features_equal_timm_on_the_same_files() {
    let dir = scratch("parity");
    let out = dir.join("feats.safetensors");
    let images = fixtures().join("embed_images");
    let run = embed(&[
        "--weights",
        encoder("timm_gap").to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--tokens",
        "--batch-size",
        "2",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let ours_bytes = std::fs::read(&out).unwrap();
    let reference_bytes = std::fs::read(fixtures().join("embed_expected.safetensors")).unwrap();
    let (_, ours_meta) = SafeTensors::read_metadata(&ours_bytes).unwrap();
    let (_, ref_meta) = SafeTensors::read_metadata(&reference_bytes).unwrap();
    let order = |m: &safetensors::tensor::Metadata| -> Vec<String> {
        serde_json::from_str(&m.metadata().as_ref().unwrap()["images"]).unwrap()
    };
    assert_eq!(order(&ours_meta), order(&ref_meta));
    assert_eq!(ours_meta.metadata().as_ref().unwrap()["layout"], "\"timm\"");

    let ours = SafeTensors::deserialize(&ours_bytes).unwrap();
    let reference = SafeTensors::deserialize(&reference_bytes).unwrap();
    for key in ["pooled", "tokens"] {
        let (shape, a) = floats(&ours, key);
        let (ref_shape, b) = floats(&reference, key);
        assert_eq!(shape, ref_shape, "{key}");
        let err = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(err <= 1e-4, "{key}: max |Δ| = {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unreadable_images_are_skipped_and_named() {
    let dir = scratch("corrupt");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::copy(
        fixtures().join("embed_images/img2.png"),
        images.join("good.png"),
    )
    .unwrap();
    std::fs::write(images.join("broken.jpg"), b"not a jpeg").unwrap();
    let out = dir.join("f.safetensors");
    let run = embed(&[
        "--weights",
        encoder("hf_ijepa").to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("broken.jpg") && stderr.contains("1 unreadable image(s) skipped"),
        "{stderr}"
    );
    let bytes = std::fs::read(&out).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().as_ref().unwrap();
    assert_eq!(meta["images"], "[\"good.png\"]");
    assert_eq!(meta["skipped"], "[\"broken.jpg\"]");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("pooled").unwrap().shape(), &[1, 48]);
    assert!(st.tensor("tokens").is_err(), "tokens only with --tokens");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = scratch("errors");
    let out = dir.join("f.safetensors");
    let images = fixtures().join("embed_images");
    for (weights, images, expected) in [
        ("/no/such/weights", images.clone(), "/no/such/weights"),
        (
            encoder("timm_gap").to_str().unwrap(),
            dir.join("missing"),
            "missing",
        ),
        (
            encoder("timm_gap").to_str().unwrap(),
            dir.clone(),
            "no .jpg, .jpeg or .png image found",
        ),
        ("hf-hub:bad", images.clone(), "not a Hub model"),
    ] {
        let run = embed(&[
            "--weights",
            weights,
            "--images",
            images.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && stderr.contains(expected),
            "{weights}: {stderr}"
        );
        assert!(!out.exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_output_never_replaces_a_folder_link_or_pipe() {
    use std::os::unix::fs::FileTypeExt;
    let dir = scratch("targets");
    let weights = encoder("timm_gap");
    let images = fixtures().join("embed_images");
    let run = |out: &Path| {
        embed(&[
            "--weights",
            weights.to_str().unwrap(),
            "--images",
            images.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    // A folder: refused before any feature is computed, nothing left beside it.
    std::fs::create_dir(dir.join("folder")).unwrap();
    let out = run(&dir.join("folder"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("a folder"), "{err}");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["folder"], "debris beside the folder");
    // A symbolic link: it stays a link; its target receives the features.
    std::os::unix::fs::symlink("real.safetensors", dir.join("link")).unwrap();
    std::fs::write(dir.join("real.safetensors"), b"old").unwrap();
    assert!(run(&dir.join("link")).status.success());
    assert!(std::fs::symlink_metadata(dir.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    let real = std::fs::read(dir.join("real.safetensors")).unwrap();
    assert!(SafeTensors::deserialize(&real).is_ok());
    // A FIFO: written through to its reader, still a FIFO.
    let fifo = dir.join("pipe");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    assert!(run(&fifo).status.success());
    assert!(SafeTensors::deserialize(&reader.join().unwrap()).is_ok());
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    std::fs::remove_dir_all(&dir).unwrap();
}
