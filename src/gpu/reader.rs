//! The file-access seam of GPU detection. `detect` reads everything through [`SysReader`]
//! with paths relative to the filesystem root (`sys/...`, `dev/...`), so tests can stand a
//! fixture tree in for a machine and inject errors a root-run test cannot produce with
//! chmod (EPERM from the KFD device cgroup check, EACCES on a device node).

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Read-only access to `/sys` and `/dev` under some root. Paths are relative (no leading
/// `/`).
pub trait SysReader {
    /// The whole content of a (small) file.
    fn read(&self, rel: &str) -> io::Result<String>;
    /// The entry names of a directory, in no particular order.
    fn read_dir(&self, rel: &str) -> io::Result<Vec<String>>;
    /// The target of a symlink, as stored (not resolved).
    fn read_link(&self, rel: &str) -> io::Result<PathBuf>;
    /// Whether the path exists (following symlinks).
    fn exists(&self, rel: &str) -> bool;
    /// Whether this process may open the path for reading and writing (`access(2)`; opens
    /// nothing, so no KFD process context is created). NotFound when it does not exist.
    fn access_rw(&self, rel: &str) -> io::Result<()>;
}

/// The real filesystem below `root`.
#[derive(Debug, Clone)]
pub struct FsReader {
    root: PathBuf,
}

impl FsReader {
    pub fn new(root: &Path) -> Self {
        FsReader {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

impl SysReader for FsReader {
    fn read(&self, rel: &str) -> io::Result<String> {
        read_attribute(&self.path(rel))
    }

    fn read_dir(&self, rel: &str) -> io::Result<Vec<String>> {
        std::fs::read_dir(self.path(rel))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn read_link(&self, rel: &str) -> io::Result<PathBuf> {
        std::fs::read_link(self.path(rel))
    }

    fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    fn access_rw(&self, rel: &str) -> io::Result<()> {
        use nix::unistd::{AccessFlags, access};
        access(&self.path(rel), AccessFlags::R_OK | AccessFlags::W_OK)
            .map_err(|e| io::Error::from_raw_os_error(e as i32))
    }
}

/// Most bytes a sysfs attribute may have: four pages (a KFD `properties` file is about 1.5
/// KiB). Longer means it is not a sysfs attribute.
pub const MAX_ATTRIBUTE_BYTES: usize = 16 * 1024;

/// Reads one sysfs attribute: a regular file of at most `MAX_ATTRIBUTE_BYTES`. Opened
/// non-blocking, so a FIFO or a device planted in the tree fails at once instead of blocking
/// or (`/dev/zero`) growing without bound. Errors keep the OS error's kind (callers tell
/// EPERM from ENOENT) and name the file.
pub fn read_attribute(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let named = |kind: io::ErrorKind, why: String| {
        io::Error::new(kind, format!("{}: {why}", path.display()))
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(named(
            io::ErrorKind::InvalidData,
            "not a regular file".into(),
        ));
    }
    // open + fstat + read + close: sysfs attributes come in one read, so a short read is the
    // end; read_to_string would add statx/lseek calls to every file.
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(named(e.kind(), e.to_string())),
        };
        out.extend_from_slice(&buf[..n]);
        if out.len() > MAX_ATTRIBUTE_BYTES {
            return Err(named(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_ATTRIBUTE_BYTES} bytes: not a sysfs attribute"),
            ));
        }
        if n < buf.len() {
            break;
        }
    }
    String::from_utf8(out)
        .map_err(|e| named(io::ErrorKind::InvalidData, format!("not UTF-8 ({e})")))
}

/// A reader that plays a container scenario over another reader: reads of the listed paths
/// fail with EPERM (the KFD cgroup check), listed device nodes fail `access_rw` with EACCES,
/// and, when `dev_present` is given, only those `dev/...` paths exist.
#[derive(Debug, Clone, Default)]
pub struct ScenarioReader<R> {
    pub inner: R,
    pub eperm: HashSet<String>,
    pub eacces: HashSet<String>,
    pub dev_present: Option<HashSet<String>>,
}

impl<R: SysReader> ScenarioReader<R> {
    pub fn new(inner: R) -> Self {
        ScenarioReader {
            inner,
            eperm: HashSet::new(),
            eacces: HashSet::new(),
            dev_present: None,
        }
    }

    fn check(&self, rel: &str) -> io::Result<()> {
        if self.eperm.contains(rel) {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        if let Some(present) = &self.dev_present
            && rel.starts_with("dev/")
            && !present.contains(rel)
        {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(())
    }
}

impl<R: SysReader> SysReader for ScenarioReader<R> {
    fn read(&self, rel: &str) -> io::Result<String> {
        self.check(rel)?;
        self.inner.read(rel)
    }

    fn read_dir(&self, rel: &str) -> io::Result<Vec<String>> {
        self.check(rel)?;
        self.inner.read_dir(rel)
    }

    fn read_link(&self, rel: &str) -> io::Result<PathBuf> {
        self.check(rel)?;
        self.inner.read_link(rel)
    }

    fn exists(&self, rel: &str) -> bool {
        self.check(rel).is_ok() && self.inner.exists(rel)
    }

    fn access_rw(&self, rel: &str) -> io::Result<()> {
        self.check(rel)?;
        if self.eacces.contains(rel) {
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        self.inner.access_rw(rel)
    }
}
