//! `hf-hub:` references against a local server that speaks the Hub's
//! `resolve` protocol (on 127.0.0.1 only), and against a pre-filled cache in
//! Python's `huggingface_hub` layout. No test reaches the internet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ijepa_encoder::io::hub::{fetch, HubModel, HubOptions};
use ijepa_encoder::weights::{load, resolve, LoadOptions};

#[path = "support/hub_server.rs"]
mod hub_server;
use hub_server::{serve, COMMIT};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ijepa-hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture_files() -> HashMap<String, Vec<u8>> {
    ["config.json", "model.safetensors"]
        .iter()
        .map(|f| {
            (
                f.to_string(),
                std::fs::read(fixture("timm_gap").join(f)).unwrap(),
            )
        })
        .collect()
}

fn options(endpoint: &str, cache: &Path, offline: bool) -> HubOptions {
    HubOptions {
        endpoint: endpoint.to_string(),
        cache_dir: cache.to_path_buf(),
        offline,
        progress: false,
    }
}

#[test]
fn downloads_into_the_python_cache_layout_then_works_offline() {
    let cache = scratch("download");
    // 2 requests per file (metadata, body) + 1 for the optional preprocessor config.
    let (endpoint, server) = serve("test-org/tiny-ijepa", fixture_files(), 5);
    let model = HubModel::parse("hf-hub:test-org/tiny-ijepa").unwrap();
    let snapshot = fetch(&model, &options(&endpoint, &cache, false)).unwrap();
    let seen = server.join().unwrap();
    assert!(seen
        .iter()
        .any(|p| p.ends_with("/resolve/main/preprocessor_config.json")));

    let repo = cache.join("models--test-org--tiny-ijepa");
    assert_eq!(snapshot, repo.join("snapshots").join(COMMIT));
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    for f in ["config.json", "model.safetensors"] {
        assert_eq!(
            std::fs::read(snapshot.join(f)).unwrap(),
            std::fs::read(fixture("timm_gap").join(f)).unwrap()
        );
    }
    // One blob per file (hf-hub leaves `.lock` files beside them).
    let blobs = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".lock")
        })
        .count();
    assert_eq!(blobs, 2);

    let from_hub = load(&snapshot, &LoadOptions::default()).unwrap();
    let local = load(&fixture("timm_gap"), &LoadOptions::default()).unwrap();
    assert_eq!(from_hub.config, local.config);

    // The server is gone: offline mode reads the cache alone.
    let path = resolve(
        "hf-hub:test-org/tiny-ijepa",
        &options("http://127.0.0.1:9", &cache, true),
    )
    .unwrap();
    assert_eq!(path, snapshot);
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn offline_cache_miss_says_what_to_do() {
    let cache = scratch("miss");
    let err = fetch(
        &HubModel::parse("hf-hub:org/absent").unwrap(),
        &options("http://127.0.0.1:9", &cache, true),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("hf-hub:org/absent@main") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    assert!(err.contains(&cache.display().to_string()), "{err}");
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn missing_repository_is_a_clear_error() {
    let cache = scratch("404");
    let (endpoint, server) = serve("someone/else", HashMap::new(), 1);
    let err = fetch(
        &HubModel::parse("hf-hub:org/absent").unwrap(),
        &options(&endpoint, &cache, false),
    )
    .unwrap_err()
    .to_string();
    server.join().unwrap();
    assert!(
        err.contains("config.json") && err.contains("not found (HTTP 404)"),
        "{err}"
    );
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn reads_a_cache_prefilled_by_python() {
    // What `huggingface_hub.snapshot_download` leaves: blobs, a snapshot of
    // symlinks into them, and a ref naming the commit.
    let cache = scratch("prefilled");
    let repo = cache.join("models--timm--vit_tiny_ijepa");
    let snapshot = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    for (i, f) in ["config.json", "model.safetensors"].iter().enumerate() {
        let blob = repo.join("blobs").join(format!("blob{i}"));
        std::fs::copy(fixture("timm_gap").join(f), &blob).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/blob{i}"), snapshot.join(f)).unwrap();
    }
    let path = resolve(
        "hf-hub:timm/vit_tiny_ijepa",
        &options("http://127.0.0.1:9", &cache, true),
    )
    .unwrap();
    let loaded = load(&path, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.config.patch_size, 14);
    std::fs::remove_dir_all(&cache).unwrap();
}
