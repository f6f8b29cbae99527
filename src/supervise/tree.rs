//! Tearing down the engine's process tree: group kill, then a sweep of every process left.
//!
//! The tree is every process whose parent chain (from /proc/<pid>/stat) leads to us: orphaned
//! workers are reparented to us (we are PID 1 or a subreaper), so a worker that called setsid,
//! double-forked or ignores SIGTERM is still found. As PID 1 that is every other process in
//! the namespace except `docker exec` sessions: their parent is outside the namespace (ppid 0),
//! so they and their children are not the engine's and are left alone.
//! The chain walk is pure (`descendants`) and tested on tables.

use super::reaper::Reaper;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One /proc/<pid>/stat line, the fields we need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
}

/// Parses `/proc/<pid>/stat` ("pid (comm) S ppid ..."); comm may contain spaces and ')'.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let pid = line[..open].trim().parse().ok()?;
    let mut rest = line.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcStat { pid, state, ppid })
}

/// Every process in `table` whose parent chain reaches `root` (root excluded).
pub fn descendants(table: &[ProcStat], root: i32) -> Vec<i32> {
    let parent: HashMap<i32, i32> = table.iter().map(|p| (p.pid, p.ppid)).collect();
    let mut out = Vec::new();
    for p in table {
        if p.pid == root {
            continue;
        }
        let mut cur = p.ppid;
        // Bounded walk: a pid table read while processes change may contain a cycle.
        for _ in 0..table.len() + 1 {
            if cur == root {
                out.push(p.pid);
                break;
            }
            match parent.get(&cur) {
                Some(&pp) if cur > 1 => cur = pp,
                _ => break,
            }
        }
    }
    out
}

/// What one process costs and whether it runs, from its stat line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub pid: i32,
    /// `comm`: the process name (`VLLM::EngineCore`).
    pub name: String,
    pub state: char,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

/// Parses the fields of `/proc/<pid>/stat` that `Usage` holds (utime and stime are fields 14
/// and 15, counted from 1, the 12th and 13th after the `)` that ends comm).
pub fn parse_usage(line: &str) -> Option<Usage> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let pid = line[..open].trim().parse().ok()?;
    let name = line.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    let state = rest.first()?.chars().next()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some(Usage {
        pid,
        name,
        state,
        cpu_ticks: utime + stime,
    })
}

/// The CPU time (seconds) of our descendants together, and those that are stopped (state
/// `T` or `t`), as (pid, name). Processes that end meanwhile are left out.
pub fn tree_usage(me: i32) -> (f64, Vec<(i32, String)>) {
    // SAFETY: plain libc call without pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    let mut ticks = 0u64;
    let mut stopped = Vec::new();
    for p in our_tree(me) {
        let Some(u) = std::fs::read_to_string(format!("/proc/{}/stat", p.pid))
            .ok()
            .and_then(|l| parse_usage(&l))
        else {
            continue;
        };
        ticks += u.cpu_ticks;
        if matches!(u.state, 'T' | 't') {
            stopped.push((u.pid, u.name));
        }
    }
    (ticks as f64 / hz, stopped)
}

/// Reads one /proc/<pid>/stat with a single read (no metadata calls: a sweep reads many).
fn read_stat(pid: i32) -> Option<ProcStat> {
    use std::io::Read;
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = [0u8; 1024];
    let n = f.read(&mut buf).ok()?;
    parse_stat(std::str::from_utf8(&buf[..n]).ok()?)
}

/// Reads every /proc/<pid>/stat (processes that vanish meanwhile are skipped).
pub fn read_proc() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        read_stat(pid)
    })
    .collect()
}

/// Pids listed in /proc/<pid>/task/*/children (children hang off the thread that forked
/// them). None when the kernel has no such files (CONFIG_PROC_CHILDREN off).
fn children_of(pid: i32) -> Option<Vec<i32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    let mut any = false;
    for t in tasks.flatten() {
        let path = t.path().join("children");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                any = true;
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => any = true, // the task ended meanwhile
        }
    }
    any.then_some(out)
}

/// Our descendants with their state, walking the children files (cost grows with our tree,
/// not with the host's process count); the full /proc scan where those files are missing.
pub fn our_tree(me: i32) -> Vec<ProcStat> {
    let Some(first) = children_of(me) else {
        return targets(&read_proc(), me);
    };
    let mut out = Vec::new();
    let mut frontier = first;
    while let Some(pid) = frontier.pop() {
        if out.iter().any(|p: &ProcStat| p.pid == pid) {
            continue;
        }
        let Some(st) = read_stat(pid) else { continue };
        out.push(st);
        if let Some(c) = children_of(pid) {
            frontier.extend(c);
        }
    }
    out
}

/// The processes a sweep must end, from a table: our descendants.
pub fn targets(table: &[ProcStat], me: i32) -> Vec<ProcStat> {
    let pick = descendants(table, me);
    table
        .iter()
        .filter(|p| pick.contains(&p.pid))
        .copied()
        .collect()
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: plain syscall; ESRCH (already gone) is fine.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// SIGKILLs the group `pgid` (the engine's session leader pid), then sweeps and reaps until
/// nothing of ours is left or `limit` passes. Returns how many processes the sweep killed
/// beyond the group.
pub async fn kill_tree(reaper: &Reaper, pgid: Option<i32>, limit: Duration) -> usize {
    if let Some(g) = pgid.filter(|&g| g > 1) {
        kill(-g, libc::SIGKILL);
    }
    let me = std::process::id() as i32;
    let start = Instant::now();
    // Each process killed, once however many rounds it takes to die.
    let mut swept: Vec<i32> = Vec::new();
    loop {
        reaper.reap_all();
        let left = our_tree(me);
        let alive: Vec<i32> = left
            .iter()
            .filter(|p| p.state != 'Z')
            .map(|p| p.pid)
            .collect();
        if left.is_empty() {
            break;
        }
        for &p in &alive {
            kill(p, libc::SIGKILL);
            if !swept.contains(&p) {
                swept.push(p);
            }
        }
        if start.elapsed() >= limit {
            tracing::warn!(
                left = left.len(),
                "processes of the engine's tree are still there after {limit:?}"
            );
            break;
        }
        // A SIGKILLed process is gone within a millisecond or so: look again at once for the
        // first 2 ms (each look reaps what died and reads a few /proc files), then every
        // 1 ms up to 20 ms, then every 5 ms.
        let waited = start.elapsed();
        if waited < Duration::from_millis(2) {
            // sched_yield too: the dying process may be queued on our CPU, and a loop that
            // only yields to tokio would keep it from running until our time slice ends.
            std::thread::yield_now();
            tokio::task::yield_now().await;
        } else if waited < Duration::from_millis(20) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    reaper.reap_all();
    swept.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32) -> ProcStat {
        ProcStat {
            pid,
            state: 'S',
            ppid,
        }
    }

    #[test]
    fn usage_lines() {
        let line = "4242 (VLLM::EngineCore) T 4200 4200 4200 0 -1 4194560 1 0 0 0 150 25 0 0 20 0 40 0 1 0 0";
        assert_eq!(
            parse_usage(line),
            Some(Usage {
                pid: 4242,
                name: "VLLM::EngineCore".into(),
                state: 'T',
                cpu_ticks: 175
            })
        );
        // A comm with spaces and parentheses.
        let line = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0";
        assert_eq!(
            parse_usage(line).map(|u| (u.name, u.cpu_ticks)),
            Some(("a (b) c".into(), 7))
        );
        assert_eq!(parse_usage("7 (x) R 1"), None);
    }

    /// A real stopped child is seen as stopped, and its CPU time is counted.
    #[test]
    fn tree_usage_sees_a_stopped_child() {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 30",
            ])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        std::thread::sleep(std::time::Duration::from_millis(300));
        // SAFETY: plain syscall on our own child.
        unsafe {
            libc::kill(pid, libc::SIGSTOP);
        }
        let me = std::process::id() as i32;
        let mut seen = false;
        for _ in 0..50 {
            let (_, stopped) = tree_usage(me);
            if stopped.iter().any(|(p, _)| *p == pid) {
                seen = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (cpu, _) = tree_usage(me);
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen, "the stopped child {pid} was not seen stopped");
        assert!(cpu > 0.0, "no CPU time counted for the busy child");
    }

    #[test]
    fn stat_lines() {
        let cases = [
            ("42 (sleep) S 7 42 42 0 -1", Some(p(42, 7))),
            (
                "43 (VLLM::Worker_TP0 (x)) R 1 43 43 0",
                Some(ProcStat {
                    pid: 43,
                    state: 'R',
                    ppid: 1,
                }),
            ),
            (
                "44 (a b) c) Z 9 1 1",
                Some(ProcStat {
                    pid: 44,
                    state: 'Z',
                    ppid: 9,
                }),
            ),
            ("garbage", None),
            ("45 (x)", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_stat(line), want, "{line}");
        }
    }

    #[test]
    fn our_tree_finds_a_real_grandchild() {
        // A shell that starts a sleep: both are our descendants, found through the children
        // files (or the /proc scan).
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let grandchild: i32 = line.trim().parse().unwrap();
        let me = std::process::id() as i32;
        let tree: Vec<i32> = our_tree(me).iter().map(|p| p.pid).collect();
        let full: Vec<i32> = targets(&read_proc(), me).iter().map(|p| p.pid).collect();
        kill(grandchild, libc::SIGKILL);
        let _ = child.wait();
        for pid in [child.id() as i32, grandchild] {
            assert!(tree.contains(&pid), "{pid} not in {tree:?}");
            assert!(full.contains(&pid), "{pid} not in {full:?}");
        }
    }

    #[test]
    fn descendants_follow_parent_chains() {
        // 1 init; 10 us; 11 engine; 12 worker (setsid'ed, still our descendant); 13 adopted
        // orphan (reparented to us); 20 unrelated with its own child 21.
        let table = [
            p(1, 0),
            p(10, 1),
            p(11, 10),
            p(12, 11),
            p(14, 12),
            p(13, 10),
            p(20, 1),
            p(21, 20),
        ];
        let mut d = descendants(&table, 10);
        d.sort();
        assert_eq!(d, vec![11, 12, 13, 14]);
        assert_eq!(descendants(&table, 11), vec![12, 14]);
        assert!(descendants(&table, 21).is_empty());
        // A cycle (table read mid-change) does not hang.
        assert!(descendants(&[p(5, 6), p(6, 5)], 10).is_empty());
        // As PID 1 every other process is a target, except a `docker exec` session (ppid 0,
        // its parent is outside the namespace) and its children.
        let ns = [p(1, 0), p(2, 1), p(3, 2), p(4, 1), p(30, 0), p(31, 30)];
        let t: Vec<i32> = targets(&ns, 1).iter().map(|p| p.pid).collect();
        assert_eq!(t, vec![2, 3, 4]);
    }
}
