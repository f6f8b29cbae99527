//! What `launch` reads from this machine, apart from Docker and the GPUs: the DRM card node
//! behind a render node, the groups owning the device nodes, `/etc/group`, the Hugging Face
//! cache folder, a local model folder, and the host-wide launch lock.

use super::prepare;
use super::spec::{self, ChosenGpu};
use crate::exit;
use std::io;
use std::path::{Path, PathBuf};

/// Why something on this machine cannot be used for a launch.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot use {}: {source}", path.display())]
    Path { path: PathBuf, source: io::Error },
    #[error("cannot find the Hugging Face cache: HOME is not set; pass --hf-cache DIR")]
    NoHfCache,
    #[error("{0}")]
    Cwd(io::Error),
}

impl LocalError {
    /// The exit status this failure ends `launch` with.
    pub fn exit_code(&self) -> u8 {
        match self {
            LocalError::Path { .. } | LocalError::NoHfCache => exit::USAGE,
            LocalError::Cwd(_) => exit::FAILURE,
        }
    }
}

/// Where concurrent launches on this machine serialise.
const LOCK_PATH: &str = "/tmp/aim-engine-launch.lock";

/// An exclusive lock on [`LOCK_PATH`], released when the file is dropped. None (and a
/// warning) when the file cannot be used: launching must not fail for want of a lock.
pub fn launch_lock() -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // flock works on a read-only descriptor too, so a lock file another user created
    // (mode 0644) still serves.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(LOCK_PATH)
        .or_else(|_| std::fs::File::open(LOCK_PATH));
    match file {
        Ok(f) => match f.lock() {
            Ok(()) => Some(f),
            Err(e) => {
                tracing::warn!("cannot lock {LOCK_PATH} ({e}); concurrent launches may race");
                None
            }
        },
        Err(e) => {
            tracing::warn!("cannot open {LOCK_PATH} ({e}); concurrent launches may race");
            None
        }
    }
}

/// `root` as an absolute path (Docker bind sources must be absolute).
pub fn absolute(p: &Path) -> Result<PathBuf, LocalError> {
    std::fs::canonicalize(p).map_err(|source| LocalError::Path {
        path: p.to_path_buf(),
        source,
    })
}

/// The DRM card node of the device behind a render node (`card17`), from sysfs.
pub fn card_node(root: &Path, render_minor: u32) -> Option<String> {
    let dir = root.join(format!("sys/class/drm/renderD{render_minor}/device/drm"));
    let mut cards: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with("card") && n[4..].chars().all(|c| c.is_ascii_digit()) && n.len() > 4
        })
        .collect();
    cards.sort();
    cards.into_iter().next()
}

/// Host group ids owning /dev/kfd and the chosen nodes.
pub fn device_gids(gpus: &[ChosenGpu]) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let mut paths = vec!["/dev/kfd".to_string()];
    for g in gpus {
        paths.push(format!("/dev/dri/renderD{}", g.render_minor));
        if let Some(c) = &g.card {
            paths.push(format!("/dev/dri/{c}"));
        }
    }
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.gid()))
        .collect()
}

/// The host's Hugging Face cache (see `prepare::hf_cache_dir`; `flag` is `--hf-cache`),
/// made absolute.
pub fn hf_cache(flag: Option<&Path>) -> Result<PathBuf, LocalError> {
    let p = prepare::hf_cache_dir(flag, &|k| std::env::var(k).ok()).ok_or(LocalError::NoHfCache)?;
    if p.is_absolute() {
        Ok(p)
    } else {
        Ok(std::env::current_dir().map_err(LocalError::Cwd)?.join(p))
    }
}

/// The host's groups (name, gid) from `/etc/group`; none when it cannot be read.
pub fn host_groups() -> Vec<(String, u32)> {
    std::fs::read_to_string("/etc/group")
        .map(|t| spec::parse_etc_group(&t))
        .unwrap_or_default()
}

/// MODEL as a local folder on the host (absolute), when it names one.
pub fn local_model_dir(model: &str) -> Option<PathBuf> {
    if !prepare::looks_local(model) {
        return None;
    }
    std::fs::canonicalize(model).ok().filter(|p| p.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_node_is_the_lowest_numbered_card_beside_the_render_node() {
        let root = tempfile::tempdir().unwrap();
        let drm = root.path().join("sys/class/drm/renderD128/device/drm");
        for n in ["renderD128", "card", "cardX", "card17", "card3"] {
            std::fs::create_dir_all(drm.join(n)).unwrap();
        }
        // Sorted as text, as the kernel lists one card per device.
        assert_eq!(card_node(root.path(), 128).as_deref(), Some("card17"));
        assert_eq!(card_node(root.path(), 136), None);
    }

    #[test]
    fn unusable_paths_are_usage_errors() {
        let e = absolute(Path::new("/nonexistent/aim-root")).unwrap_err();
        assert_eq!(e.exit_code(), exit::USAGE);
        assert!(
            e.to_string()
                .starts_with("cannot use /nonexistent/aim-root: "),
            "{e}"
        );
        assert_eq!(LocalError::NoHfCache.exit_code(), exit::USAGE);
        assert_eq!(
            hf_cache(Some(Path::new("/abs/hf"))).unwrap(),
            PathBuf::from("/abs/hf")
        );
        assert!(local_model_dir("Qwen/Qwen3-8B").is_none());
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(local_model_dir(d), Some(std::fs::canonicalize(d).unwrap()));
    }
}
