//! Data-parallel pretraining under `mpirun` (the `mpi` feature; `.ci/run`
//! installs Open MPI and runs these): 2 ranks train what one process trains
//! at the same global batch, 1 rank is bit-identical to one process, a
//! killed rank ends the job and `--resume` continues it exactly,
//! accumulation composes with ranks, and the unreadable images of every
//! rank's share are in the summary and the checkpoint.
//!
//! Tolerance between 2 ranks and 1 process (the order of float additions
//! differs): every tensor of the checkpoint within 1e-5 of its largest
//! magnitude.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use safetensors::SafeTensors;

mod support;

/// A tiny run of 2 epochs of 4 steps at a global batch of 8.
fn tiny(extra: &[&'static str]) -> Vec<&'static str> {
    let run = [
        "--set",
        "model.args.depth=2",
        "--set",
        "data.synthetic_images=32",
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--seed",
        "3",
        "--no-probe",
    ];
    [support::TINY_MODEL, &run, extra].concat()
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ijepa-mpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ijepa-cli")
}

/// `mpirun -np N ijepa-cli pretrain --out OUT ARGS` (as root too, as CI runs).
fn mpirun(n: usize, out: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", &n.to_string(), "--oversubscribe"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .arg(bin())
        .arg("pretrain")
        .arg("--out")
        .arg(out)
        .args(args);
    cmd
}

fn direct(program: &str, out: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("pretrain").arg("--out").arg(out).args(args);
    cmd
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is Open MPI installed: openmpi-bin?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn step_file(run: &Path, step: u64, file: &str) -> PathBuf {
    run.join(format!("checkpoints/step-{step:08}/{file}"))
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The largest difference of any tensor of two safetensors files relative
/// to that tensor's largest magnitude, and its name.
fn worst_relative(a: &Path, b: &Path) -> (f32, String) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let (x, y) = (
        SafeTensors::deserialize(&x).unwrap(),
        SafeTensors::deserialize(&y).unwrap(),
    );
    assert_eq!(x.len(), y.len());
    let mut worst = (0f32, String::new());
    for name in x.names() {
        let (p, q) = (
            floats(x.tensor(name).unwrap().data()),
            floats(y.tensor(name).unwrap().data()),
        );
        assert_eq!(p.len(), q.len(), "{name}");
        let scale = p
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()))
            .max(f32::MIN_POSITIVE);
        let d = p
            .iter()
            .zip(&q)
            .fold(0f32, |m, (u, v)| m.max((u - v).abs()))
            / scale;
        if d > worst.0 {
            worst = (d, name.to_string());
        }
    }
    worst
}

#[test]
fn two_ranks_train_what_one_process_trains() {
    let (one, two) = (dir("one"), dir("two"));
    ok(&mut direct(bin(), &one, &tiny(&[])));
    let out = ok(&mut mpirun(2, &two, &tiny(&[])));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("2 processes, each preparing and training on 4 of every batch of 8"),
        "{log}"
    );
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let (d, name) = worst_relative(&step_file(&one, 8, file), &step_file(&two, 8, file));
        eprintln!("2 ranks vs 1 process, {file}: worst {d:.2e} of the tensor's scale ({name})");
        assert!(d <= 1e-5, "{file}: {name} differs by {d:e} of its scale");
    }
    let losses = |run: &Path| -> Vec<f64> {
        support::metrics(run)
            .iter()
            .map(|r| r[3].parse().unwrap())
            .collect()
    };
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len(), 8);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "losses {a:?} vs {b:?}");
    }
    // Only rank 0 wrote: one metrics row per step, one state per checkpoint.
    assert_eq!(b.len(), 8);
    let state = std::fs::read_to_string(step_file(&two, 8, "state.json")).unwrap();
    assert!(state.contains("\"world_size\": 2"), "{state}");

    // The run resumes in one process (same global batch), with a note …
    let resumed = ok(&mut direct(
        bin(),
        &two,
        &tiny(&["--resume", "--max-steps", "8"]),
    ));
    let log = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        log.contains("written by a job of 2 processes, this one has 1"),
        "{log}"
    );
    // … and a job whose processes cannot share the batch is refused.
    let bad = mpirun(2, &dir("odd"), &tiny(&["--set", "data.batch_size=9"]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains(
            "data.batch_size = 9 is the global batch, shared equally by the job's 2 processes"
        ),
        "{err}"
    );
    for d in [one, two] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn one_rank_under_mpirun_is_bit_identical_to_one_process() {
    let (alone, under) = (dir("alone"), dir("under"));
    ok(&mut direct(bin(), &alone, &tiny(&[])));
    ok(&mut mpirun(1, &under, &tiny(&[])));
    for file in ["model.safetensors", "optimizer.safetensors"] {
        support::assert_same_tensors(&step_file(&alone, 8, file), &step_file(&under, 8, file));
    }
    // And to a build without the `mpi` feature, where CI provides one.
    match std::env::var("IJEPA_PLAIN_CLI") {
        Ok(plain) => {
            let p = dir("plain");
            ok(&mut direct(&plain, &p, &tiny(&[])));
            for file in ["model.safetensors", "optimizer.safetensors"] {
                support::assert_same_tensors(&step_file(&p, 8, file), &step_file(&under, 8, file));
            }
            let _ = std::fs::remove_dir_all(p);
        }
        Err(_) => eprintln!("note: IJEPA_PLAIN_CLI unset: not compared with a build without MPI"),
    }
    for d in [alone, under] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The processes `mpirun` (pid `parent`) started, with their ranks.
fn ranks_of(parent: u32) -> Vec<(u32, usize)> {
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        let ppid: u32 = after
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid != parent {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let rank = env
            .split(|b| *b == 0)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .find_map(|v| v.strip_prefix("OMPI_COMM_WORLD_RANK="))
            .and_then(|r| r.parse().ok());
        if let Some(rank) = rank {
            out.push((pid, rank));
        }
    }
    out
}

#[test]
fn a_killed_rank_ends_the_job_and_resume_continues_exactly() {
    let (killed, straight) = (dir("killed"), dir("straight"));
    // Long enough to be killed mid-way; a checkpoint every 2 steps.
    let long = tiny(&[
        "--set",
        "optim.epochs=1000",
        "--set",
        "run.checkpoint_every=2",
    ]);
    let mut job = mpirun(2, &killed, &long)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while support::metrics_rows(&killed) < 5 {
        if let Some(status) = job.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut job.stderr.take().unwrap(), &mut err).unwrap();
            panic!("the job ended by itself ({status}):\n{err}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the job never reached step 5"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let victim = ranks_of(job.id())
        .into_iter()
        .find(|(_, r)| *r == 1)
        .expect("rank 1 among mpirun's children");
    let killed_at = Instant::now();
    assert!(Command::new("kill")
        .args(["-9", &victim.0.to_string()])
        .status()
        .unwrap()
        .success());
    let out = job.wait_with_output().unwrap();
    let waited = killed_at.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the job went on without rank 1:\n{err}"
    );
    assert!(
        waited < Duration::from_secs(60),
        "the job took {waited:?} to end"
    );
    eprintln!(
        "the job ended {:.1} s after rank 1 was killed",
        waited.as_secs_f64()
    );

    // Resumed under mpirun to step 12, it equals a job never interrupted.
    let to12 = tiny(&[
        "--set",
        "optim.epochs=1000",
        "--set",
        "run.checkpoint_every=2",
        "--max-steps",
        "12",
    ]);
    ok(&mut mpirun(
        2,
        &killed,
        &[to12.as_slice(), &["--resume"]].concat(),
    ));
    ok(&mut mpirun(2, &straight, &to12));
    for file in ["model.safetensors", "optimizer.safetensors"] {
        support::assert_same_tensors(
            &step_file(&killed, 12, file),
            &step_file(&straight, 12, file),
        );
    }
    for d in [killed, straight] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn accumulation_composes_with_ranks() {
    let (one, two) = (dir("acc1"), dir("acc2"));
    let acc = tiny(&["--set", "optim.accumulate=2"]);
    ok(&mut direct(bin(), &one, &acc));
    ok(&mut mpirun(2, &two, &acc));
    // 32 images, batches of 8, 2 per step: 2 steps per epoch, 2 epochs.
    assert_eq!(support::metrics(&two).len(), 4);
    assert!(support::metrics(&two).iter().all(|r| r[10] == "16"));
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let (d, name) = worst_relative(&step_file(&one, 4, file), &step_file(&two, 4, file));
        eprintln!("2 ranks × 2 micro-batches vs 1 process, {file}: worst {d:.2e} ({name})");
        assert!(d <= 1e-5, "{file}: {name} differs by {d:e} of its scale");
    }
    for d in [one, two] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The names in a checkpoint's `skipped` list, sorted.
fn skipped(run: &Path, step: u64) -> Vec<String> {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(step_file(run, step, "state.json")).unwrap())
            .unwrap();
    let mut names: Vec<String> = state["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn every_ranks_unreadable_images_are_in_the_summary_and_the_checkpoint() {
    use image::{Rgb, RgbImage};
    let data = dir("bad-data");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..12u32 {
        let img = RgbImage::from_fn(40, 40, |x, y| Rgb([(x * 6 + i) as u8, (y * 6) as u8, 90]));
        img.save(data.join(format!("{i:02}.png"))).unwrap();
    }
    for i in 0..4 {
        std::fs::write(data.join(format!("bad{i}.jpg")), b"\xff\xd8 not a jpeg").unwrap();
    }
    let path: &'static str = Box::leak(data.display().to_string().into_boxed_str());
    // One epoch (2 steps): each rank meets only its own share's files.
    let args = tiny(&["--data", path, "--max-steps", "2"]);
    let (one, two) = (dir("bad-one"), dir("bad-two"));
    let single = ok(&mut direct(bin(), &one, &args));
    let job = ok(&mut mpirun(2, &two, &args));
    let expected = skipped(&one, 2);
    assert!(expected.len() >= 2, "{expected:?}");
    // Rank 1 met some of them itself: they are still rank 0's to report.
    let log = String::from_utf8_lossy(&job.stderr);
    assert!(
        log.contains("note: rank 1: skipped unreadable image"),
        "{log}"
    );
    assert_eq!(skipped(&two, 2), expected);
    let summary = |out: &Output| -> String {
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        let at = log
            .find("unreadable images (their places")
            .unwrap_or_else(|| panic!("{log}"));
        let start = log[..at].rfind('\n').map_or(0, |i| i + 1);
        let mut lines: Vec<&str> = log[start..].lines().take(1 + expected.len()).collect();
        lines.sort();
        lines.join("\n")
    };
    assert_eq!(summary(&job), summary(&single));
    for d in [data, one, two] {
        let _ = std::fs::remove_dir_all(d);
    }
}
