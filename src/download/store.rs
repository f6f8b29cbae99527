//! The Hugging Face cache layout written the way huggingface_hub writes it:
//! `models--org--name/blobs/<sha256 or git blob id>` (`<blob>.incomplete` while it is being
//! fetched), `snapshots/<commit>/<file>` as relative links into `blobs/`, and
//! `refs/<revision>` holding the commit.

use super::error::DownloadError;
use std::fs;
use std::path::{Path, PathBuf};

/// One repo's folder in a hub cache.
#[derive(Debug, Clone)]
pub struct RepoDir {
    pub dir: PathBuf,
}

/// Whether `s` is a hex digest of `len` characters (blob names are never anything else).
fn is_hex(s: &str, lens: &[usize]) -> bool {
    lens.contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// A file name from a listing that is safe to use as a path below the snapshot.
pub fn safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && !name.chars().any(char::is_control)
        && name
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

/// A blob name (sha256 or git sha1) that is safe to use as a file name.
pub fn safe_blob_name(name: &str) -> bool {
    is_hex(name, &[40, 64])
}

impl RepoDir {
    pub fn new(hub_root: &Path, repo: &str) -> RepoDir {
        RepoDir {
            dir: hub_root.join(format!("models--{}", repo.replace('/', "--"))),
        }
    }

    pub fn blob(&self, blob: &str) -> PathBuf {
        self.dir.join("blobs").join(blob)
    }

    pub fn incomplete(&self, blob: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{blob}.incomplete"))
    }

    /// huggingface_hub's lock file for a blob: `<hub root>/.locks/models--org--name/<blob>.lock`.
    pub fn lock_file(&self, blob: &str) -> PathBuf {
        let name = self.dir.file_name().map(PathBuf::from).unwrap_or_default();
        let root = self.dir.parent().map(Path::to_path_buf).unwrap_or_default();
        root.join(".locks").join(name).join(format!("{blob}.lock"))
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    /// Bytes of `blob` already here: its full size when the blob is complete, else what the
    /// `.incomplete` file holds (0 when neither exists).
    pub fn have(&self, blob: &str, size: u64) -> u64 {
        let len = |p: PathBuf| fs::metadata(p).ok().map(|m| m.len());
        match len(self.blob(blob)) {
            Some(l) if l == size => size,
            _ => len(self.incomplete(blob)).unwrap_or(0).min(size),
        }
    }

    /// Links `snapshots/<commit>/<file>` to `blobs/<blob>` (relative, replacing what is there).
    pub fn link(&self, commit: &str, file: &str, blob: &str) -> Result<(), DownloadError> {
        let link = self.snapshot(commit).join(file);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(DownloadError::io(parent))?;
        }
        let depth = file.matches('/').count();
        let target = format!("{}blobs/{blob}", "../".repeat(depth + 2));
        if fs::read_link(&link).is_ok_and(|t| t == Path::new(&target)) {
            return Ok(());
        }
        match fs::symlink_metadata(&link) {
            Ok(_) => fs::remove_file(&link).map_err(DownloadError::io(&link))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DownloadError::io(&link)(e)),
        }
        std::os::unix::fs::symlink(&target, &link).map_err(DownloadError::io(&link))
    }

    /// Writes `refs/<revision>` = `commit` (atomically), unless the revision is the commit.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), DownloadError> {
        if revision == commit {
            return Ok(());
        }
        let path = self.dir.join("refs").join(revision);
        if fs::read_to_string(&path).is_ok_and(|c| c.trim() == commit) {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(DownloadError::io(parent))?;
        }
        let tmp = path.with_extension("aim-engine-tmp");
        fs::write(&tmp, commit).map_err(DownloadError::io(&tmp))?;
        fs::rename(&tmp, &path).map_err(DownloadError::io(&path))
    }
}

/// An exclusive `flock` on `path` (created), held until dropped: what huggingface_hub's
/// `filelock` takes on the same file, so two downloads (ours or theirs) of one blob never
/// write it at once. Blocks while another holder has it; `on_wait` runs once if so.
pub fn lock(
    path: &Path,
    on_wait: impl FnOnce(),
) -> Result<nix::fcntl::Flock<fs::File>, DownloadError> {
    use nix::fcntl::{Flock, FlockArg};
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(DownloadError::io(parent))?;
    }
    let open = || {
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(DownloadError::io(path))
    };
    let errno = |e: nix::errno::Errno| DownloadError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::from(e),
    };
    match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            on_wait();
            Flock::lock(open()?, FlockArg::LockExclusive).map_err(|(_, e)| errno(e))
        }
        Err((_, e)) => Err(errno(e)),
    }
}

/// Free bytes for an unprivileged writer on the filesystem holding `path` (or its nearest
/// existing ancestor), and the path that was asked.
pub fn free_bytes(path: &Path) -> Result<(u64, PathBuf), DownloadError> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent.to_path_buf(),
            None => break,
        }
    }
    let st = nix::sys::statvfs::statvfs(&p).map_err(|e| DownloadError::Io {
        path: p.clone(),
        source: std::io::Error::from(e),
    })?;
    Ok((
        (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64),
        p,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(safe_file_name("config.json"));
        assert!(safe_file_name("sub/dir/file.json"));
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a\\b", "./a"] {
            assert!(!safe_file_name(bad), "{bad}");
        }
        assert!(safe_blob_name(&"a".repeat(40)));
        assert!(safe_blob_name(&"0".repeat(64)));
        assert!(!safe_blob_name("../../x"));
        assert!(!safe_blob_name(&"g".repeat(40)));
    }

    #[test]
    fn layout_links_and_refs() {
        let t = tempfile::tempdir().unwrap();
        let r = RepoDir::new(t.path(), "org/m");
        assert!(r.dir.ends_with("models--org--m"));
        let blob = "a".repeat(40);
        let commit = "c".repeat(40);
        fs::create_dir_all(r.dir.join("blobs")).unwrap();
        fs::write(r.blob(&blob), "hello").unwrap();
        r.link(&commit, "sub/f.json", &blob).unwrap();
        r.link(&commit, "sub/f.json", &blob).unwrap();
        let link = r.snapshot(&commit).join("sub/f.json");
        assert_eq!(
            fs::read_link(&link).unwrap(),
            PathBuf::from(format!("../../../blobs/{blob}"))
        );
        assert_eq!(fs::read_to_string(&link).unwrap(), "hello");
        r.write_ref("main", &commit).unwrap();
        assert_eq!(fs::read_to_string(r.dir.join("refs/main")).unwrap(), commit);
        r.write_ref(&commit, &commit).unwrap();
        assert!(!r.dir.join("refs").join(&commit).exists());
        assert_eq!(
            r.lock_file(&blob),
            t.path()
                .join(".locks/models--org--m")
                .join(format!("{blob}.lock"))
        );
        let held = lock(&r.lock_file(&blob), || panic!("nobody holds it")).unwrap();
        drop(held);
        assert_eq!(r.have(&blob, 5), 5);
        assert_eq!(r.have(&blob, 9), 0);
        fs::write(r.incomplete(&blob), "hel").unwrap();
        assert_eq!(r.have(&blob, 9), 3);
        let (free, at) = free_bytes(&t.path().join("not/yet/there")).unwrap();
        assert!(free > 0);
        assert_eq!(at, t.path());
    }
}
