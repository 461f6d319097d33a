//! Models on the Hugging Face Hub: `hf-hub:org/name[@revision]`.
//!
//! Files go to the standard Hugging Face cache
//! (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`)
//! in the layout Python's `huggingface_hub` uses (`models--org--name/`
//! `blobs`, `snapshots/<commit>`, `refs/<revision>`), so both share one
//! cache. `HF_ENDPOINT` selects another server; `HF_HUB_OFFLINE=1` reads the
//! cache only.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{EncoderError, Result};

/// The prefix that marks a Hub reference where a path is expected.
pub const HUB_PREFIX: &str = "hf-hub:";

/// A model repository on the Hub, at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubModel {
    /// `org/name`.
    pub repo_id: String,
    /// Branch, tag or commit (`main` when not given).
    pub revision: String,
}

impl HubModel {
    /// Parses `hf-hub:org/name[@revision]` (the prefix is optional).
    pub fn parse(spec: &str) -> Result<Self> {
        let body = spec.strip_prefix(HUB_PREFIX).unwrap_or(spec);
        let (repo_id, revision) = match body.split_once('@') {
            Some((id, rev)) => (id, rev),
            None => (body, "main"),
        };
        let valid_id = {
            let parts: Vec<&str> = repo_id.split('/').collect();
            parts.len() == 2
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && !p.contains(char::is_whitespace))
        };
        if !valid_id || revision.is_empty() {
            return Err(EncoderError::Hub(format!(
                "{spec:?} is not a Hub model: expected hf-hub:org/name or hf-hub:org/name@revision"
            )));
        }
        Ok(Self {
            repo_id: repo_id.to_string(),
            revision: revision.to_string(),
        })
    }

    fn repo(&self) -> Repo {
        Repo::with_revision(self.repo_id.clone(), RepoType::Model, self.revision.clone())
    }
}

impl std::fmt::Display for HubModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{HUB_PREFIX}{}@{}", self.repo_id, self.revision)
    }
}

/// Where and how to reach the Hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Server root, `https://huggingface.co` unless `HF_ENDPOINT` says.
    pub endpoint: String,
    /// The cache folder (the `hub` folder of Python's cache).
    pub cache_dir: PathBuf,
    /// Use the cache only.
    pub offline: bool,
    /// Show download progress bars.
    pub progress: bool,
}

impl HubOptions {
    /// From the environment, as Python's `huggingface_hub` reads it.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From any variable lookup (testable without touching the process
    /// environment).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let cache_dir = var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
                let cache = var("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                    PathBuf::from(var("HOME").unwrap_or_else(|| ".".into())).join(".cache")
                });
                cache.join("huggingface")
            });
            home.join("hub")
        });
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        Self {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into()),
            cache_dir,
            offline,
            progress: false,
        }
    }
}

/// Files of a model repository that ijepa-rs reads; the first two must exist.
const FILES: &[(&str, bool)] = &[
    ("config.json", true),
    ("model.safetensors", true),
    ("preprocessor_config.json", false),
];

/// Makes the model's files present in the cache (downloading what is
/// missing unless offline) and returns its snapshot folder.
pub fn fetch(model: &HubModel, opts: &HubOptions) -> Result<PathBuf> {
    let cache = Cache::new(opts.cache_dir.clone()).repo(model.repo());
    let api = if opts.offline {
        None
    } else {
        Some(
            ApiBuilder::from_cache(Cache::new(opts.cache_dir.clone()))
                .with_endpoint(opts.endpoint.trim_end_matches('/').to_string())
                .with_progress(opts.progress)
                .build()
                .map_err(|e| EncoderError::Hub(format!("cannot set up the Hub client: {e}")))?
                .repo(model.repo()),
        )
    };
    let mut snapshot: Option<PathBuf> = None;
    for &(file, required) in FILES {
        let found = match (cache.get(file), &api) {
            (Some(path), _) => Some(path),
            (None, None) if required => {
                return Err(EncoderError::Hub(format!(
                    "{model}: {file} is not in the cache at {} and HF_HUB_OFFLINE is set; \
                     download it first (ijepa-cli download) or unset HF_HUB_OFFLINE",
                    opts.cache_dir.display()
                )))
            }
            (None, None) => None,
            (None, Some(api)) => match api.download(file) {
                Ok(path) => Some(path),
                Err(e) if !required && is_not_found(&e) => None,
                Err(e) => {
                    return Err(EncoderError::Hub(format!(
                        "{model}: cannot download {file} from {}: {}",
                        api.url(file),
                        describe(&e)
                    )))
                }
            },
        };
        if let (Some(path), None) = (&found, &snapshot) {
            snapshot = path.parent().map(Path::to_path_buf);
        }
    }
    snapshot.ok_or_else(|| EncoderError::Hub(format!("{model}: nothing was fetched")))
}

fn is_not_found(e: &hf_hub::api::sync::ApiError) -> bool {
    matches!(e, hf_hub::api::sync::ApiError::RequestError(r) if matches!(**r, ureq::Error::Status(404, _)))
}

fn describe(e: &hf_hub::api::sync::ApiError) -> String {
    match e {
        hf_hub::api::sync::ApiError::RequestError(r) => match &**r {
            ureq::Error::Status(404, _) => {
                "not found (HTTP 404): check the repository name and revision".into()
            }
            ureq::Error::Status(401 | 403, _) => {
                "access denied: a gated or private repository needs a token (huggingface-cli login)"
                    .into()
            }
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hub_references() {
        let m = HubModel::parse("hf-hub:facebook/ijepa_vith14_1k").unwrap();
        assert_eq!(
            (m.repo_id.as_str(), m.revision.as_str()),
            ("facebook/ijepa_vith14_1k", "main")
        );
        let m = HubModel::parse("hf-hub:timm/vit_huge_patch14_gap_224.in1k_ijepa@v1.0").unwrap();
        assert_eq!(m.revision, "v1.0");
        assert_eq!(
            m.to_string(),
            "hf-hub:timm/vit_huge_patch14_gap_224.in1k_ijepa@v1.0"
        );
        for bad in [
            "hf-hub:",
            "hf-hub:name",
            "hf-hub:a/b/c",
            "hf-hub:a/b@",
            "hf-hub:/b",
        ] {
            assert!(HubModel::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn environment_follows_huggingface_hub() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let o = HubOptions::from_vars(vars(&[("HOME", "/home/u")]));
        assert_eq!(o.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(o.endpoint, "https://huggingface.co");
        assert!(!o.offline);
        let o = HubOptions::from_vars(vars(&[
            ("HF_HOME", "/data/hf"),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_ENDPOINT", "http://127.0.0.1:9"),
        ]));
        assert_eq!(o.cache_dir, PathBuf::from("/data/hf/hub"));
        assert!(o.offline);
        assert_eq!(o.endpoint, "http://127.0.0.1:9");
        let o = HubOptions::from_vars(vars(&[
            ("HF_HOME", "/data/hf"),
            ("HF_HUB_CACHE", "/fast/cache"),
        ]));
        assert_eq!(o.cache_dir, PathBuf::from("/fast/cache"));
    }
}
