//! Giving back the memory that only start-up used, so the long-lived supervisor is small.
//!
//! Start-up (the command line, sysfs, the recipe catalogue and its YAML parser, the flag
//! tables, the plan) runs once, but it leaves pages behind, and glibc adds some of its own:
//!
//! - **Code.** The kernel maps a binary's code in 64 KiB runs around each page fault
//!   ("fault-around"), so a start-up that touches code all over a 6 MiB text keeps most of it
//!   mapped, and counted in our PSS (no other process maps our binary). `release_startup`
//!   unmaps our own executable's text mapping with `madvise(MADV_DONTNEED)`: its pages are
//!   clean copies of the file and stay in the page cache, so what the supervisor and the port
//!   use afterwards faults straight back in (minor faults, no disk read), and what only
//!   start-up used stays out. Only the `r-xp` mapping of our executable is touched: never
//!   data, never relocated read-only data (`MADV_DONTNEED` would undo its relocations).
//! - **Heap.** glibc keeps freed chunks in its arenas; `malloc_trim(0)` returns their whole
//!   pages to the kernel.
//! - **Arenas.** glibc gives each thread that allocates an arena of its own; `one_arena`
//!   (called first thing in `main`, before any thread starts) keeps the supervisor's few
//!   threads (the runtime, the log writers, the engine's log copiers) on one, which they
//!   share without contention (the runtime is single-threaded, the others mostly sleep;
//!   `download`'s worker threads wait on the network).
//!
//! `release_startup` is called when an engine has been spawned and when it is ready
//! (`supervise::attempt`). The parsing is pure (`text_ranges`); the rest is system calls.

use std::path::Path;

/// The address ranges `[start, end)` of `exe`'s executable mappings in a `/proc/<pid>/maps`
/// text.
pub fn text_ranges(maps: &str, exe: &Path) -> Vec<(usize, usize)> {
    let exe = exe.to_string_lossy();
    maps.lines()
        .filter_map(|line| {
            // range, perms, offset, device, inode, then the path (which may hold spaces).
            let mut rest = line;
            let mut fields = [""; 5];
            for field in &mut fields {
                rest = rest.trim_start();
                let end = rest.find(char::is_whitespace)?;
                (*field, rest) = rest.split_at(end);
            }
            let [range, perms, ..] = fields;
            if perms != "r-xp" || rest.trim_start() != exe {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (start < end).then_some((start, end))
        })
        .collect()
}

/// Unmaps the pages of our own code and trims the heap (see the module docs). Best effort:
/// a failure costs memory, never correctness, and is logged at debug.
pub fn release_startup() {
    let exe = std::fs::read_link("/proc/self/exe");
    let maps = std::fs::read_to_string("/proc/self/maps");
    let (Ok(exe), Ok(maps)) = (exe, maps) else {
        tracing::debug!("memory: /proc/self is not readable; nothing released");
        return;
    };
    for (start, end) in text_ranges(&maps, &exe) {
        // SAFETY: the range is our executable's own read-only, private, file-backed code
        // mapping, taken from /proc/self/maps: dropping its pages only makes the next use
        // fault them in again from the page cache; nothing written is lost.
        let r =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if r != 0 {
            tracing::debug!(
                "memory: madvise of our code failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    trim_heap();
}

/// Keeps every thread's allocations in one glibc arena (see the module docs).
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt with an integer option, before the other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim takes a size and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_executable_text_is_named() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 123 /opt/aim engine/bin/aim-engine
55d0c0100000-55d0c0700000 r-xp 00100000 fd:01 123 /opt/aim engine/bin/aim-engine
55d0c0700000-55d0c0720000 r--p 00700000 fd:01 123 /opt/aim engine/bin/aim-engine
55d0c0720000-55d0c0723000 rw-p 00720000 fd:01 123 /opt/aim engine/bin/aim-engine
7f0000000000-7f0000100000 r-xp 00028000 fd:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000300000 r-xp 00000000 00:00 0
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]
55d0c0800000-55d0c0900000 r-xp 00000000 fd:01 124 /opt/aim engine/bin/aim-engine-old
garbage line
";
        let got = text_ranges(maps, Path::new("/opt/aim engine/bin/aim-engine"));
        assert_eq!(got, [(0x55d0c0100000, 0x55d0c0700000)]);
        assert!(text_ranges(maps, Path::new("/nowhere")).is_empty());
        assert!(text_ranges("", Path::new("/opt/aim engine/bin/aim-engine")).is_empty());
    }

    #[test]
    fn releasing_keeps_the_process_working() {
        // Our own test binary's code is dropped and faults back in: we go on running.
        release_startup();
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
    }
}
