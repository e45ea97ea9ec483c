//! Timing resources (ports and mesh links), XY routing, and the pipelined-transfer formula.
//!
//! A transfer of `B` bytes passes a path of stages (HBM port, mesh links, router ports, the
//! DMA port); stage `i` has a serialization time `ser_i = ceil(B / bw_i)`, a latency `lat_i`
//! and a time `free_i` from which it is available. With `t0` the time the transfer starts:
//!
//! ```text
//! s_1 = max(t0, free_1)                        e_1 = s_1 + ser_1
//! s_i = max(s_{i-1} + lat_{i-1}, free_i)       e_i = max(s_i + ser_i, e_{i-1} + lat_{i-1})
//! free_i := e_i                                done = e_n + lat_n
//! ```
//!
//! so data streams through the path at the slowest stage's rate (cut-through), each resource
//! is held for its serialization time, and transfers contend first-come first-served in
//! the order they are issued.

use std::collections::HashMap;

use crate::config::Config;

/// One stage of a transfer's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stage {
    pub res: usize,
    pub ser: u64,
    pub lat: u64,
}

/// Mesh link directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    East = 0,
    West = 1,
    South = 2,
    North = 3,
}

/// The free-at times of every shared resource of the chip.
#[derive(Debug, Clone)]
pub(crate) struct Resources {
    pub free: Vec<u64>,
    nodes: usize,
    width: usize,
    ports: usize,
    hbm_edges: usize,
}

/// `ceil(bytes / bw)`, with `bw >= 1`.
pub(crate) fn ser(bytes: u64, bw: u64) -> u64 {
    bytes.div_ceil(bw.max(1))
}

impl Resources {
    pub fn new(cfg: &Config) -> Resources {
        let nodes = cfg.nodes();
        let ports = cfg.hbm_ports() as usize;
        Resources {
            free: vec![0; 3 * nodes + ports + 4 * nodes],
            nodes,
            width: cfg.mesh_width as usize,
            ports,
            hbm_edges: if cfg.mesh_width == 1 {
                1
            } else {
                cfg.hbm_edges as usize
            },
        }
    }

    pub fn node_index(&self, x: usize, y: usize) -> usize {
        y * self.width + x
    }

    pub fn dma_port(&self, node: usize) -> usize {
        node
    }

    pub fn inject(&self, node: usize) -> usize {
        self.nodes + node
    }

    pub fn eject(&self, node: usize) -> usize {
        2 * self.nodes + node
    }

    pub fn hbm_port(&self, port: usize) -> usize {
        3 * self.nodes + port
    }

    pub fn link(&self, node: usize, dir: Dir) -> usize {
        3 * self.nodes + self.ports + 4 * node + dir as usize
    }

    /// Whether a resource index is a mesh link.
    pub fn is_link(&self, res: usize) -> bool {
        res >= 3 * self.nodes + self.ports
    }

    /// The links of the XY route from `from` to `to` (x first, then y).
    pub fn route(&self, from: (usize, usize), to: (usize, usize)) -> Vec<usize> {
        let (mut x, mut y) = from;
        let mut links = Vec::new();
        while x != to.0 {
            let node = self.node_index(x, y);
            if to.0 > x {
                links.push(self.link(node, Dir::East));
                x += 1;
            } else {
                links.push(self.link(node, Dir::West));
                x -= 1;
            }
        }
        while y != to.1 {
            let node = self.node_index(x, y);
            if to.1 > y {
                links.push(self.link(node, Dir::South));
                y += 1;
            } else {
                links.push(self.link(node, Dir::North));
                y -= 1;
            }
        }
        links
    }

    /// The HBM port serving node `(x, y)`: its row's west port, or the east one when the
    /// node is in the east half (`2x >= width`) and the mesh has east ports. Returns the
    /// port number and the edge node it attaches to.
    pub fn hbm_port_of(&self, x: usize, y: usize) -> (usize, (usize, usize)) {
        if self.hbm_edges == 2 && 2 * x >= self.width {
            (y * 2 + 1, (self.width - 1, y))
        } else {
            (y * self.hbm_edges, (0, y))
        }
    }

    /// Runs a transfer through `stages` starting at `t0` (see the module doc). Stages whose
    /// resource is already in `memo` (shared by earlier paths of the same multicast) reuse
    /// their times. Returns the first stage's end and the completion time.
    pub fn pipeline(
        &mut self,
        t0: u64,
        stages: &[Stage],
        memo: &mut HashMap<usize, (u64, u64)>,
    ) -> (u64, u64) {
        let mut prev: Option<(u64, u64, u64)> = None;
        let mut first_end = t0;
        for (i, st) in stages.iter().enumerate() {
            let (s, e) = match memo.get(&st.res) {
                Some(&se) => se,
                None => {
                    let free = self.free.get(st.res).copied().unwrap_or(0);
                    let (s, e) = match prev {
                        None => {
                            let s = t0.max(free);
                            (s, s.saturating_add(st.ser))
                        }
                        Some((ps, pe, plat)) => {
                            let s = ps.saturating_add(plat).max(free);
                            let e = s.saturating_add(st.ser).max(pe.saturating_add(plat));
                            (s, e)
                        }
                    };
                    if let Some(f) = self.free.get_mut(st.res) {
                        *f = e;
                    }
                    memo.insert(st.res, (s, e));
                    (s, e)
                }
            };
            if i == 0 {
                first_end = e;
            }
            prev = Some((s, e, st.lat));
        }
        let done = prev.map_or(t0, |(_, e, lat)| e.saturating_add(lat));
        (first_end, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_formula() {
        let cfg = Config::preset("2x2").unwrap();
        let mut r = Resources::new(&cfg);
        let a = r.dma_port(0);
        let b = r.hbm_port(0);
        let stages = [
            Stage {
                res: b,
                ser: 3,
                lat: 200,
            },
            Stage {
                res: a,
                ser: 4,
                lat: 0,
            },
        ];
        let (first, done) = r.pipeline(10, &stages, &mut HashMap::new());
        assert_eq!((first, done), (13, 214));
        // A second transfer queues behind the first on the HBM port (free at 13) and then
        // on the DMA port (free at 214): s2 = max(13 + 200, 214), done = 214 + 4.
        let (_, done2) = r.pipeline(10, &stages, &mut HashMap::new());
        assert_eq!(done2, 218);
        // The slow stage bounds the end: 100 cycles at the port then a fast link.
        let mut r = Resources::new(&cfg);
        let s = [
            Stage {
                res: b,
                ser: 100,
                lat: 5,
            },
            Stage {
                res: a,
                ser: 1,
                lat: 0,
            },
        ];
        assert_eq!(r.pipeline(0, &s, &mut HashMap::new()), (100, 105));
    }

    #[test]
    fn xy_routes_and_ports() {
        let cfg = Config::preset("4x4").unwrap();
        let r = Resources::new(&cfg);
        let route = r.route((0, 0), (2, 1));
        assert_eq!(
            route,
            vec![
                r.link(0, Dir::East),
                r.link(1, Dir::East),
                r.link(2, Dir::South)
            ]
        );
        assert_eq!(r.route((3, 3), (3, 3)), Vec::<usize>::new());
        assert_eq!(r.hbm_port_of(1, 2), (4, (0, 2)));
        assert_eq!(r.hbm_port_of(2, 2), (5, (3, 2)));
    }
}
