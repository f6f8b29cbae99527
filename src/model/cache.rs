//! Finding a model's files without the network: the Hugging Face hub cache
//! (`models--org--name/snapshots/<refs/main>/`), AIM's cache folder (`$AIM_CACHE_PATH/org/name`)
//! or a local model folder. The only file access of the model module.
//!
//! Cache root, first hit wins (huggingface_hub's own order): HF_HUB_CACHE,
//! HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub.

use super::ModelRef;
use super::config::{ModelFacts, facts};
use std::fs;
use std::path::{Path, PathBuf};

/// The hub cache roots to try, from an environment lookup (first existing one is used).
pub fn hub_cache_roots(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty()).map(PathBuf::from);
    let mut v = Vec::new();
    if let Some(p) = set("HF_HUB_CACHE") {
        v.push(p);
    }
    if let Some(p) = set("HUGGINGFACE_HUB_CACHE") {
        v.push(p);
    }
    if let Some(p) = set("HF_HOME") {
        v.push(p.join("hub"));
    }
    if let Some(p) = set("XDG_CACHE_HOME") {
        v.push(p.join("huggingface/hub"));
    }
    if let Some(p) = set("HOME") {
        v.push(p.join(".cache/huggingface/hub"));
    }
    v
}

/// The snapshot folder of `org/name` at `refs/main` under a hub cache root, if present.
pub fn snapshot_dir(root: &Path, hub_id: &str) -> Option<PathBuf> {
    snapshot_dir_at(root, hub_id, "main")
}

/// The snapshot folder of `org/name` at `revision` under a hub cache root, if present: a
/// 40-hex commit is its own snapshot, a branch or tag goes through `refs/<revision>` (as
/// huggingface_hub resolves it offline). `revision` is a checked relative path.
pub fn snapshot_dir_at(root: &Path, hub_id: &str, revision: &str) -> Option<PathBuf> {
    let repo = root.join(format!("models--{}", hub_id.replace('/', "--")));
    if revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()) {
        let snap = repo.join("snapshots").join(revision);
        if snap.is_dir() {
            return Some(snap);
        }
    }
    if revision
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return None;
    }
    let rev = fs::read_to_string(repo.join("refs").join(revision)).ok()?;
    let rev = rev.trim();
    // A revision is a 40-hex commit id; anything else is not trusted as a path part.
    if rev.is_empty() || !rev.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let snap = repo.join("snapshots").join(rev);
    snap.is_dir().then_some(snap)
}

/// The folder holding the model's config.json, if any: a local model folder itself, AIM's
/// cache (`$AIM_CACHE_PATH/org/name`, or a hub layout in `$AIM_CACHE_PATH/hub`), else the first hub cache root that has a snapshot.
pub fn model_files_dir(model: &ModelRef, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    model_files_dir_at(model, "main", env)
}

/// [`model_files_dir`] with a Hub model's snapshot at `revision` (`$AIM_CACHE_PATH/org/name`
/// has no revisions and counts only for `main`).
pub fn model_files_dir_at(
    model: &ModelRef,
    revision: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    match model {
        ModelRef::Local(p) => Some(p.clone()),
        ModelRef::Hub(id) => {
            if let Some(aim) = env("AIM_CACHE_PATH").filter(|v| !v.trim().is_empty()) {
                let d = Path::new(&aim).join(id);
                if revision == "main" && d.join("config.json").is_file() {
                    return Some(d);
                }
                // Where `aim-engine download` puts it when AIM_CACHE_PATH is set.
                if let Some(snap) = snapshot_dir_at(&Path::new(&aim).join("hub"), id, revision) {
                    return Some(snap);
                }
            }
            hub_cache_roots(env)
                .iter()
                .find_map(|root| snapshot_dir_at(root, id, revision))
        }
    }
}

/// Facts about the model: config.json and model.safetensors.index.json when a cache holds
/// them, else its name. Never fails: unreadable files count as absent.
pub fn read_facts(
    model: &ModelRef,
    env: &dyn Fn(&str) -> Option<String>,
) -> (ModelFacts, Option<PathBuf>) {
    read_facts_at(model, "main", env)
}

/// [`read_facts`] of a Hub model at `revision`.
pub fn read_facts_at(
    model: &ModelRef,
    revision: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (ModelFacts, Option<PathBuf>) {
    let dir = model_files_dir_at(model, revision, env);
    let read = |f: &str| {
        dir.as_ref()
            .and_then(|d| fs::read_to_string(d.join(f)).ok())
    };
    let config = read("config.json");
    let index = read("model.safetensors.index.json");
    let found = dir.filter(|_| config.is_some());
    (
        facts(&model.name(), config.as_deref(), index.as_deref()),
        found,
    )
}

/// An environment lookup over the real process environment.
pub fn process_env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SizeSource;
    use crate::model::config::tests::QWEN3_32B;
    use std::collections::HashMap;

    /// Builds a hub cache the way huggingface_hub writes it: blobs + relative symlinks.
    fn hub_cache(root: &Path, id: &str, rev: &str, files: &[(&str, &str)]) {
        let repo = root.join(format!("models--{}", id.replace('/', "--")));
        fs::create_dir_all(repo.join("refs")).unwrap();
        fs::write(repo.join("refs/main"), format!("{rev}\n")).unwrap();
        let snap = repo.join("snapshots").join(rev);
        fs::create_dir_all(&snap).unwrap();
        fs::create_dir_all(repo.join("blobs")).unwrap();
        for (i, (name, text)) in files.iter().enumerate() {
            let blob = format!("b{i:039}");
            fs::write(repo.join("blobs").join(&blob), text).unwrap();
            std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snap.join(name)).unwrap();
        }
    }

    fn env_of(pairs: &[(&str, PathBuf)]) -> impl Fn(&str) -> Option<String> + use<> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.display().to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn root_order() {
        let env = env_of(&[
            ("HF_HOME", "/h".into()),
            ("HOME", "/home/u".into()),
            ("HF_HUB_CACHE", "/c".into()),
        ]);
        assert_eq!(
            hub_cache_roots(&env),
            vec![
                PathBuf::from("/c"),
                PathBuf::from("/h/hub"),
                PathBuf::from("/home/u/.cache/huggingface/hub")
            ]
        );
    }

    #[test]
    fn reads_config_from_hub_cache_snapshot() {
        let d = tempfile::tempdir().unwrap();
        let hub = d.path().join("hf/hub");
        let rev = "0123456789abcdef0123456789abcdef01234567";
        let index = r#"{"metadata":{"total_size":65524246528},"weight_map":{}}"#;
        hub_cache(
            &hub,
            "Qwen/Qwen3-32B",
            rev,
            &[
                ("config.json", QWEN3_32B),
                ("model.safetensors.index.json", index),
            ],
        );
        // A stale snapshot that refs/main does not point at must be ignored.
        fs::create_dir_all(hub.join("models--Qwen--Qwen3-32B/snapshots/ffff")).unwrap();
        let env = env_of(&[("HF_HOME", d.path().join("hf"))]);
        let m = ModelRef::Hub("Qwen/Qwen3-32B".into());
        let (f, dir) = read_facts(&m, &env);
        assert_eq!(f.source, SizeSource::Index);
        assert_eq!(f.weight_bytes, Some(65_524_246_528));
        assert_eq!(f.config.as_ref().unwrap().num_attention_heads, 64);
        assert!(dir.unwrap().ends_with(rev));
        // Not in the cache: from the name.
        let (f, dir) = read_facts(&ModelRef::Hub("Qwen/Qwen3-8B".into()), &env);
        assert_eq!(f.source, SizeSource::Name);
        assert!(dir.is_none());
        // At a revision: a commit is its own snapshot; a tag goes through refs/<tag>.
        assert!(read_facts_at(&m, rev, &env).1.unwrap().ends_with(rev));
        assert!(read_facts_at(&m, "v1", &env).1.is_none());
        fs::create_dir_all(hub.join("models--Qwen--Qwen3-32B/refs/pr")).unwrap();
        fs::write(hub.join("models--Qwen--Qwen3-32B/refs/v1"), rev).unwrap();
        fs::write(hub.join("models--Qwen--Qwen3-32B/refs/pr/1"), rev).unwrap();
        assert!(read_facts_at(&m, "v1", &env).1.unwrap().ends_with(rev));
        assert!(read_facts_at(&m, "pr/1", &env).1.unwrap().ends_with(rev));
        assert!(read_facts_at(&m, "../refs/v1", &env).1.is_none());
        assert!(read_facts_at(&m, &"f".repeat(40), &env).1.is_none());
        // A refs/main that is not a commit id is not followed.
        fs::write(hub.join("models--Qwen--Qwen3-32B/refs/main"), "../../etc").unwrap();
        assert_eq!(read_facts(&m, &env).0.source, SizeSource::Name);
    }

    #[test]
    fn local_folder_and_aim_cache() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("config.json"), QWEN3_32B).unwrap();
        let (f, _) = read_facts(&ModelRef::Local(d.path().to_path_buf()), &|_| None);
        assert_eq!(f.source, SizeSource::Config);
        let aim = tempfile::tempdir().unwrap();
        fs::create_dir_all(aim.path().join("Qwen/Qwen3-32B")).unwrap();
        fs::write(aim.path().join("Qwen/Qwen3-32B/config.json"), QWEN3_32B).unwrap();
        let env = env_of(&[("AIM_CACHE_PATH", aim.path().to_path_buf())]);
        let (f, _) = read_facts(&ModelRef::Hub("Qwen/Qwen3-32B".into()), &env);
        assert_eq!(f.source, SizeSource::Config);
    }
}
