//! Every output goes through `ijepa_encoder::io::output`: complete or absent,
//! never in place of anything but a regular file.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use ijepa_encoder::io::output::{write_file, write_safetensors, OutputFile};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ijepa-output-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Names in `d` other than `keep`: temporary files left behind.
fn leftovers(d: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_new_file_gets_the_usual_permissions_and_no_temporary_file_stays() {
    let d = dir("new");
    write_file(&d.join("a.txt"), b"hello").unwrap();
    std::fs::write(d.join("plain.txt"), b"x").unwrap(); // same umask, std's way
    assert_eq!(std::fs::read(d.join("a.txt")).unwrap(), b"hello");
    assert_eq!(mode(&d.join("a.txt")), mode(&d.join("plain.txt")));
    assert!(leftovers(&d, &["a.txt", "plain.txt"]).is_empty());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_regular_file_is_replaced_whole_and_keeps_its_permissions() {
    let d = dir("replace");
    let p = d.join("out.bin");
    std::fs::write(&p, b"old contents, longer than the new").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    write_file(&p, b"new").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"new");
    assert_eq!(mode(&p), 0o640);
    assert!(leftovers(&d, &["out.bin"]).is_empty());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_uncommitted_or_failed_write_leaves_the_target_untouched() {
    let d = dir("abandon");
    let p = d.join("out.bin");
    std::fs::write(&p, b"old").unwrap();
    {
        let mut out = OutputFile::create(&p).unwrap();
        out.write_all(b"half of the new").unwrap();
        // dropped: an error happened before commit
    }
    assert_eq!(std::fs::read(&p).unwrap(), b"old");
    assert!(leftovers(&d, &["out.bin"]).is_empty());
    // A temporary file of a killed writer is removed by the next write.
    std::fs::write(d.join(".out.bin.tmp-99999-0"), b"debris").unwrap();
    write_file(&p, b"new").unwrap();
    assert!(leftovers(&d, &["out.bin"]).is_empty());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_symbolic_link_stays_a_link_and_its_target_is_written() {
    let d = dir("link");
    std::fs::write(d.join("real.txt"), b"old").unwrap();
    std::os::unix::fs::symlink("real.txt", d.join("link.txt")).unwrap();
    write_file(&d.join("link.txt"), b"new").unwrap();
    let meta = std::fs::symlink_metadata(d.join("link.txt")).unwrap();
    assert!(meta.file_type().is_symlink());
    assert_eq!(std::fs::read(d.join("real.txt")).unwrap(), b"new");
    // A link to nothing is refused, and nothing is created.
    std::os::unix::fs::symlink("missing.txt", d.join("dangling")).unwrap();
    let err = write_file(&d.join("dangling"), b"x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dangling") && err.contains("symbolic link to nothing"),
        "{err}"
    );
    assert!(!d.join("missing.txt").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn folders_are_refused_with_what_is_there() {
    let d = dir("folder");
    std::fs::create_dir(d.join("sub")).unwrap();
    let err = write_file(&d.join("sub"), b"x").unwrap_err().to_string();
    assert!(err.contains("sub") && err.contains("a folder"), "{err}");
    assert!(d.join("sub").is_dir());
    assert!(
        leftovers(&d, &["sub"]).is_empty(),
        "no partial file beside it"
    );
    let err = write_file(&d.join("no/such/folder/x"), b"x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn fifos_and_character_devices_are_written_through() {
    let d = dir("fifo");
    let fifo = d.join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    write_file(&fifo, b"through the pipe").unwrap();
    assert_eq!(reader.join().unwrap(), b"through the pipe");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(leftovers(&d, &["pipe"]).is_empty());

    // A null device node of our own (mknod needs root; /dev/null itself is
    // never risked).
    let node = d.join("null");
    let mknod = std::process::Command::new("mknod")
        .args(["-m", "666"])
        .arg(&node)
        .args(["c", "1", "3"])
        .status();
    if mknod.is_ok_and(|s| s.success()) {
        write_file(&node, b"discarded").unwrap();
        let kind = std::fs::metadata(&node).unwrap().file_type();
        assert!(kind.is_char_device(), "the device node was replaced");
    } else {
        eprintln!("SKIPPED the device-node case: mknod needs root");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn safetensors_files_read_back_with_every_dtype_and_their_metadata() {
    let d = dir("st");
    let p = d.join("t.safetensors");
    let dev = Device::Cpu;
    let f32s = Tensor::arange(0f32, 12.0, &dev)
        .unwrap()
        .reshape((3, 4))
        .unwrap();
    let tensors: Vec<(&str, Tensor)> = vec![
        ("b.f32", f32s.clone()),
        ("a.f64", f32s.to_dtype(DType::F64).unwrap()),
        ("c.bf16", f32s.to_dtype(DType::BF16).unwrap()),
        ("d.f16", f32s.to_dtype(DType::F16).unwrap()),
        ("e.u32", f32s.to_dtype(DType::U32).unwrap()),
        ("f.u8", f32s.to_dtype(DType::U8).unwrap()),
        ("g.i64", f32s.to_dtype(DType::I64).unwrap()),
        // A non-contiguous view is written in its logical order.
        ("h.t", f32s.t().unwrap()),
        ("i.empty", Tensor::zeros((0, 3), DType::F32, &dev).unwrap()),
    ];
    let meta = HashMap::from([("k".to_string(), "v".to_string())]);
    write_safetensors(&p, tensors.iter().map(|(k, t)| (*k, t)), Some(&meta)).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(header.metadata().as_ref().unwrap()["k"], "v");
    let back = candle_core::safetensors::load(&p, &dev).unwrap();
    assert_eq!(back.len(), tensors.len());
    for (name, t) in &tensors {
        let got = &back[*name];
        assert_eq!((got.dtype(), got.dims()), (t.dtype(), t.dims()), "{name}");
        let as_f64 = |x: &Tensor| {
            x.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        assert_eq!(as_f64(got), as_f64(t), "{name}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}
