//! GPU allocation across containers: which GPUs of this host the running aim-engine
//! containers hold (read back from their labels), and which free GPUs a new launch gets,
//! preferring a set that shares an xGMI hive. Pure.

use crate::gpu::{Gpu, Topology};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// An aim-engine container and the GPUs its labels say it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub name: String,
    /// Host GPU ordinals at launch time (`Gpu::index`).
    pub ordinals: Vec<u32>,
    /// Render minors (`/dev/dri/renderD<N>`); the stable identity of a GPU, preferred over
    /// ordinals, which move when the host's visibility variables change.
    pub render_minors: Vec<u32>,
}

impl Holder {
    /// Whether this container holds `gpu`: by render minor when the labels have them, else by
    /// ordinal (labels written by hand or by an older version).
    pub fn holds(&self, gpu: &Gpu) -> bool {
        if self.render_minors.is_empty() {
            self.ordinals.contains(&gpu.index)
        } else {
            self.render_minors.contains(&gpu.render_minor)
        }
    }
}

/// Parses a label list like `0,1,2,3` (spaces and empty items tolerated; junk items are
/// skipped, since a label edited by hand must not stop every later launch).
pub fn parse_list(label: &str) -> Vec<u32> {
    label
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// Formats ordinals for labels and messages: `0,1,2,3`.
pub fn format_list(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The topology without the GPUs any holder has. xGMI pairs keep only free GPUs.
pub fn free_topology(topo: &Topology, holders: &[Holder]) -> Topology {
    let gpus: Vec<Gpu> = topo
        .gpus
        .iter()
        .filter(|g| !holders.iter().any(|h| h.holds(g)))
        .cloned()
        .collect();
    let free: BTreeSet<u32> = gpus.iter().map(|g| g.index).collect();
    let xgmi = topo
        .xgmi
        .iter()
        .copied()
        .filter(|(a, b)| free.contains(a) && free.contains(b))
        .collect();
    Topology {
        gpus,
        excluded: topo.excluded.clone(),
        xgmi,
    }
}

/// Not enough free GPUs: what was asked, what is free, and who holds the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotEnoughGpus {
    pub wanted: u32,
    pub total: u32,
    pub free: Vec<u32>,
    /// Container name -> host ordinals it holds on this topology.
    pub holders: BTreeMap<String, Vec<u32>>,
}

impl fmt::Display for NotEnoughGpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.wanted == 1 { "" } else { "s" };
        write!(
            f,
            "{} GPU{plural} wanted but only {} of {} {} free",
            self.wanted,
            self.free.len(),
            self.total,
            if self.free.len() == 1 { "is" } else { "are" }
        )?;
        if !self.free.is_empty() {
            write!(f, " (GPU {})", format_list(&self.free))?;
        }
        if self.holders.is_empty() {
            return write!(f, "; no aim-engine container holds any");
        }
        let held: Vec<String> = self
            .holders
            .iter()
            .map(|(n, g)| format!("{n} holds GPU {}", format_list(g)))
            .collect();
        write!(
            f,
            "; {}. Stop one with `aim-engine stop NAME` or ask for fewer GPUs",
            held.join(", ")
        )
    }
}

/// Who holds which GPU of `topo` (ordinals of `topo`), for messages.
pub fn holders_on(topo: &Topology, holders: &[Holder]) -> BTreeMap<String, Vec<u32>> {
    let mut out = BTreeMap::new();
    for h in holders {
        let held: Vec<u32> = topo
            .gpus
            .iter()
            .filter(|g| h.holds(g))
            .map(|g| g.index)
            .collect();
        if !held.is_empty() {
            out.insert(h.name.clone(), held);
        }
    }
    out
}

/// The error for `wanted` GPUs when fewer are free.
pub fn not_enough(topo: &Topology, holders: &[Holder], wanted: u32) -> NotEnoughGpus {
    NotEnoughGpus {
        wanted,
        total: topo.gpus.len() as u32,
        free: free_topology(topo, holders)
            .gpus
            .iter()
            .map(|g| g.index)
            .collect(),
        holders: holders_on(topo, holders),
    }
}

/// Chooses `count` GPUs of `topo` that no holder has (ordinals, ascending). Preference, best
/// first: every pair directly linked by xGMI (or partitions of one card); all in one xGMI
/// hive (connected through links, or the same non-zero hive id); otherwise the lowest free
/// ordinals. Within a preference the lowest ordinals win, so the result is deterministic.
pub fn allocate(
    topo: &Topology,
    holders: &[Holder],
    count: u32,
) -> Result<Vec<u32>, NotEnoughGpus> {
    let free = free_topology(topo, holders);
    let n = count as usize;
    if n == 0 || free.gpus.len() < n {
        return Err(not_enough(topo, holders, count));
    }
    let ids: Vec<u32> = free.gpus.iter().map(|g| g.index).collect();
    let linked = |a: u32, b: u32| -> bool {
        let (x, y) = (a.min(b), a.max(b));
        if free.xgmi.contains(&(x, y)) {
            return true;
        }
        let ga = free.gpus.iter().find(|g| g.index == a);
        let gb = free.gpus.iter().find(|g| g.index == b);
        matches!((ga, gb), (Some(ga), Some(gb)) if ga.physical_index == gb.physical_index)
    };
    if let Some(set) = clique(&ids, n, &linked) {
        return Ok(set);
    }
    // One hive: connected components over links and shared hive ids.
    let same_hive = |a: u32, b: u32| -> bool {
        if linked(a, b) {
            return true;
        }
        let ga = free.gpus.iter().find(|g| g.index == a);
        let gb = free.gpus.iter().find(|g| g.index == b);
        matches!((ga, gb), (Some(ga), Some(gb)) if ga.hive_id != 0 && ga.hive_id == gb.hive_id)
    };
    for component in components(&ids, &same_hive) {
        if component.len() >= n {
            return Ok(component[..n].to_vec());
        }
    }
    Ok(ids[..n].to_vec())
}

/// The first (by lowest ordinals, greedily) set of `n` ids where every pair is linked.
fn clique(ids: &[u32], n: usize, linked: &dyn Fn(u32, u32) -> bool) -> Option<Vec<u32>> {
    if n == 1 {
        return ids.first().map(|&i| vec![i]);
    }
    for (start, &first) in ids.iter().enumerate() {
        let mut set = vec![first];
        for &candidate in &ids[start + 1..] {
            if set.iter().all(|&m| linked(m, candidate)) {
                set.push(candidate);
                if set.len() == n {
                    return Some(set);
                }
            }
        }
    }
    None
}

/// Connected components of `ids` under `edge`, each sorted, in order of their lowest id.
fn components(ids: &[u32], edge: &dyn Fn(u32, u32) -> bool) -> Vec<Vec<u32>> {
    let mut seen: BTreeSet<u32> = BTreeSet::new();
    let mut out = Vec::new();
    for &root in ids {
        if !seen.insert(root) {
            continue;
        }
        let mut comp = vec![root];
        let mut stack = vec![root];
        while let Some(cur) = stack.pop() {
            for &other in ids {
                if !seen.contains(&other) && edge(cur, other) {
                    seen.insert(other);
                    comp.push(other);
                    stack.push(other);
                }
            }
        }
        comp.sort_unstable();
        out.push(comp);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, physical: u32, hive: u64) -> Gpu {
        Gpu {
            physical_index: physical,
            hive_id: hive,
            ..Gpu::mi300x(index)
        }
    }

    /// `n` whole cards; `links` the xGMI pairs; `hive` the hive id of every card.
    fn topo(n: u32, links: &[(u32, u32)], hive: u64) -> Topology {
        Topology {
            gpus: (0..n).map(|i| gpu(i, i, hive)).collect(),
            excluded: vec![],
            xgmi: links.to_vec(),
        }
    }

    fn full_mesh(n: u32) -> Vec<(u32, u32)> {
        let mut v = Vec::new();
        for a in 0..n {
            for b in a + 1..n {
                v.push((a, b));
            }
        }
        v
    }

    fn holder(name: &str, ordinals: &[u32], minors: &[u32]) -> Holder {
        Holder {
            name: name.into(),
            ordinals: ordinals.to_vec(),
            render_minors: minors.to_vec(),
        }
    }

    #[test]
    fn allocation_table() {
        // Two 4-GPU islands (like two MI250X pairs of cards or two hives): 0-3 and 4-7.
        let mut islands = full_mesh(4);
        islands.extend(full_mesh(4).iter().map(|(a, b)| (a + 4, b + 4)));
        // A ring 0-1-2-3-0: no 3-clique, but one connected hive.
        let ring = vec![(0, 1), (1, 2), (2, 3), (0, 3)];
        struct Case {
            what: &'static str,
            topo: Topology,
            held: Vec<Holder>,
            count: u32,
            want: Result<Vec<u32>, &'static str>,
        }
        let cases = vec![
            Case {
                what: "empty host, 8 fully linked GPUs",
                topo: topo(8, &full_mesh(8), 1),
                held: vec![],
                count: 4,
                want: Ok(vec![0, 1, 2, 3]),
            },
            Case {
                what: "first four held by render minor",
                topo: topo(8, &full_mesh(8), 1),
                held: vec![holder("a", &[0, 1, 2, 3], &[128, 136, 144, 152])],
                count: 4,
                want: Ok(vec![4, 5, 6, 7]),
            },
            Case {
                what: "holder labels without render minors fall back to ordinals",
                topo: topo(8, &full_mesh(8), 1),
                held: vec![holder("a", &[0, 2], &[])],
                count: 2,
                want: Ok(vec![1, 3]),
            },
            Case {
                what: "render minors win over stale ordinals",
                topo: topo(8, &full_mesh(8), 1),
                held: vec![holder("a", &[0, 1], &[144, 152])],
                count: 2,
                want: Ok(vec![0, 1]),
            },
            Case {
                what: "islands: 2 held in the first island, 4 wanted -> the second island",
                topo: topo(8, &islands, 0),
                held: vec![holder("a", &[0, 1], &[128, 136])],
                count: 4,
                want: Ok(vec![4, 5, 6, 7]),
            },
            Case {
                what: "islands: 2 wanted -> the lowest linked pair",
                topo: topo(8, &islands, 0),
                held: vec![holder("a", &[0, 1, 2], &[128, 136, 144])],
                count: 2,
                want: Ok(vec![4, 5]),
            },
            Case {
                what: "no link between free GPUs -> lowest ordinals",
                topo: topo(4, &[], 0),
                held: vec![holder("a", &[1], &[136])],
                count: 2,
                want: Ok(vec![0, 2]),
            },
            Case {
                what: "ring: 3 wanted, no full mesh, one hive -> lowest of the hive",
                topo: topo(4, &ring, 0),
                held: vec![],
                count: 3,
                want: Ok(vec![0, 1, 2]),
            },
            Case {
                what: "same hive id without a direct link beats an unlinked set",
                topo: Topology {
                    gpus: vec![gpu(0, 0, 5), gpu(1, 1, 9), gpu(2, 2, 5)],
                    excluded: vec![],
                    xgmi: vec![],
                },
                held: vec![],
                count: 2,
                want: Ok(vec![0, 2]),
            },
            Case {
                what: "partitions of one card count as linked",
                topo: Topology {
                    gpus: vec![gpu(0, 0, 0), gpu(1, 1, 0), gpu(2, 1, 0)],
                    excluded: vec![],
                    xgmi: vec![],
                },
                held: vec![],
                count: 2,
                want: Ok(vec![1, 2]),
            },
            Case {
                what: "two holders, 4 wanted, 2 free",
                topo: topo(8, &full_mesh(8), 1),
                held: vec![
                    holder("aim-engine-a", &[0, 1, 2, 3], &[128, 136, 144, 152]),
                    holder("aim-engine-b", &[4, 5], &[160, 168]),
                ],
                count: 4,
                want: Err(
                    "4 GPUs wanted but only 2 of 8 are free (GPU 6,7); aim-engine-a holds GPU \
                     0,1,2,3, aim-engine-b holds GPU 4,5. Stop one with `aim-engine stop NAME` \
                     or ask for fewer GPUs",
                ),
            },
            Case {
                what: "everything held",
                topo: topo(2, &full_mesh(2), 1),
                held: vec![holder("x", &[0, 1], &[128, 136])],
                count: 1,
                want: Err(
                    "1 GPU wanted but only 0 of 2 are free; x holds GPU 0,1. Stop one with \
                     `aim-engine stop NAME` or ask for fewer GPUs",
                ),
            },
            Case {
                what: "more than the host has",
                topo: topo(2, &full_mesh(2), 1),
                held: vec![],
                count: 4,
                want: Err(
                    "4 GPUs wanted but only 2 of 2 are free (GPU 0,1); no aim-engine container \
                     holds any",
                ),
            },
        ];
        for c in cases {
            let got = allocate(&c.topo, &c.held, c.count).map_err(|e| e.to_string());
            assert_eq!(got, c.want.map_err(String::from), "{}", c.what);
        }
    }

    #[test]
    fn free_topology_drops_held_gpus_and_their_links() {
        let t = topo(4, &full_mesh(4), 1);
        let f = free_topology(&t, &[holder("a", &[1], &[136])]);
        let idx: Vec<u32> = f.gpus.iter().map(|g| g.index).collect();
        assert_eq!(idx, vec![0, 2, 3]);
        assert_eq!(f.xgmi, vec![(0, 2), (0, 3), (2, 3)]);
    }

    #[test]
    fn label_lists_round_trip_and_tolerate_junk() {
        assert_eq!(parse_list("0,1, 2 ,3"), vec![0, 1, 2, 3]);
        assert_eq!(parse_list(""), Vec::<u32>::new());
        assert_eq!(parse_list("4,x,,5"), vec![4, 5]);
        assert_eq!(format_list(&[128, 136]), "128,136");
        assert_eq!(parse_list(&format_list(&[7, 9])), vec![7, 9]);
    }
}
