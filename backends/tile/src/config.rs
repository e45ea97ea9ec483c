//! Machine configuration: presets and overrides from a `key = value` text file.
//!
//! ```text
//! # a 4x4 chip with slower HBM
//! preset = "4x4"            # optional, first; the base the other keys override
//! hbm_bytes_per_cycle = 200
//! hop_cycles = 6
//! timing_only = true
//! ```
//!
//! Every field of [`Config`] is a key; an unknown key, a repeated key, a bad value or a value
//! out of range is an error. Integers may be decimal or `0x` hex with `_` separators.

use crate::error::ConfigError;

/// Every parameter of the simulated machine. All rates are per cycle of the one clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Mesh width (nodes along x), 1..=255.
    pub mesh_width: u32,
    /// Mesh height (nodes along y), 1..=255.
    pub mesh_height: u32,
    /// Clock in GHz (used for the report's times and the trace's timestamps).
    pub clock_ghz: f64,
    /// SRAM bytes per node, 1..=16 MiB (24-bit SRAM addresses).
    pub sram_bytes: u64,
    /// Matrix engine block: `mx_m × mx_n × mx_k` MACs per cycle for bf16/CFP8.
    pub mx_m: u64,
    /// See [`Config::mx_m`].
    pub mx_n: u64,
    /// See [`Config::mx_m`].
    pub mx_k: u64,
    /// f32 operands run at `1 / mx_f32_divisor` of the rate.
    pub mx_f32_divisor: u64,
    /// Fixed pipeline latency added to every `mm`.
    pub mx_latency: u64,
    /// Vector engine width in bytes per cycle (64 = 512 bits).
    pub vx_bytes_per_cycle: u64,
    /// Fixed pipeline latency added to every vector instruction.
    pub vx_latency: u64,
    /// Transcendental ops (and division) run at `1 / vx_slow_divisor` of the rate.
    pub vx_slow_divisor: u64,
    /// Bandwidth of a node's DMA port into its SRAM.
    pub dma_bytes_per_cycle: u64,
    /// Cycles the DMA engine spends issuing one descriptor.
    pub dma_setup: u64,
    /// Most DMA transfers of one node in flight at once.
    pub dma_max_outstanding: u64,
    /// HBM capacity of the chip in bytes (at most 2^40: 40-bit HBM addresses).
    pub hbm_bytes: u64,
    /// Total HBM bandwidth of the chip, shared evenly by its edge ports.
    pub hbm_bytes_per_cycle: u64,
    /// HBM access latency.
    pub hbm_latency: u64,
    /// Mesh edges with HBM ports: 1 (west) or 2 (west and east); one port per row and edge.
    pub hbm_edges: u64,
    /// Bandwidth of one mesh link, per direction.
    pub link_bytes_per_cycle: u64,
    /// Latency of one hop.
    pub hop_cycles: u64,
    /// Latency of a router injecting a transfer.
    pub router_cycles: u64,
    /// Cost of `sem.signal`, `sem.wait` and `vseed`.
    pub sync_cycles: u64,
    /// Seed of the vector engines' stochastic-rounding generators.
    pub seed: u64,
    /// Skip all arithmetic and data movement (timing and bounds checks only).
    pub timing_only: bool,
    /// Record trace events for the Chrome trace.
    pub trace: bool,
    /// Most host memory the simulator may allocate for SRAM and HBM contents.
    pub max_host_bytes: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config::base(1, 1)
    }
}

/// The keys of a config file.
pub const KEYS: &[&str] = &[
    "mesh_width",
    "mesh_height",
    "clock_ghz",
    "sram_bytes",
    "mx_m",
    "mx_n",
    "mx_k",
    "mx_f32_divisor",
    "mx_latency",
    "vx_bytes_per_cycle",
    "vx_latency",
    "vx_slow_divisor",
    "dma_bytes_per_cycle",
    "dma_setup",
    "dma_max_outstanding",
    "hbm_bytes",
    "hbm_bytes_per_cycle",
    "hbm_latency",
    "hbm_edges",
    "link_bytes_per_cycle",
    "hop_cycles",
    "router_cycles",
    "sync_cycles",
    "seed",
    "timing_only",
    "trace",
    "max_host_bytes",
];

/// Largest latency or divisor accepted (keeps cycle arithmetic far from overflow).
const MAX_CYCLES_PARAM: u64 = 1 << 32;

fn parse_u64(v: &str) -> Result<u64, String> {
    let t = v.trim().replace('_', "");
    let r = if let Some(h) = t.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else {
        t.parse()
    };
    r.map_err(|_| format!("`{}` is not a non-negative integer", v.trim()))
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        o => Err(format!("`{o}` is not a boolean")),
    }
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
}

impl Config {
    fn base(w: u32, h: u32) -> Config {
        Config {
            mesh_width: w,
            mesh_height: h,
            clock_ghz: 2.0,
            sram_bytes: 1_310_720,
            mx_m: 8,
            mx_n: 8,
            mx_k: 4,
            mx_f32_divisor: 16,
            mx_latency: 8,
            vx_bytes_per_cycle: 64,
            vx_latency: 4,
            vx_slow_divisor: 4,
            dma_bytes_per_cycle: 256,
            dma_setup: 8,
            dma_max_outstanding: 8,
            hbm_bytes: 16 << 30,
            hbm_bytes_per_cycle: 400,
            hbm_latency: 200,
            hbm_edges: 2,
            link_bytes_per_cycle: 256,
            hop_cycles: 4,
            router_cycles: 2,
            sync_cycles: 1,
            seed: 0,
            timing_only: false,
            trace: true,
            max_host_bytes: 4 << 30,
        }
    }

    /// A named preset: `1x1`, `2x2`, `4x4` (test chips) or `d1` / `18x20` (a D1-sized chip).
    pub fn preset(name: &str) -> Result<Config, ConfigError> {
        match name {
            "1x1" => Ok(Config::base(1, 1)),
            "2x2" => Ok(Config::base(2, 2)),
            "4x4" => Ok(Config::base(4, 4)),
            "d1" | "18x20" => Ok(Config::base(18, 20)),
            other => Err(ConfigError::UnknownPreset(other.to_string())),
        }
    }

    /// Parses a config text (see the module doc) and validates it.
    pub fn from_text(text: &str) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        let mut seen: Vec<String> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let ln = i + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let lerr = |msg: String| ConfigError::Line { line: ln, msg };
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| lerr(format!("expected `key = value`, got `{line}`")))?;
            let k = k.trim();
            if seen.iter().any(|s| s == k) {
                return Err(lerr(format!("`{k}` set twice")));
            }
            if k == "preset" {
                if !seen.is_empty() {
                    return Err(lerr("`preset` must come before the other keys".into()));
                }
                cfg = Config::preset(unquote(v))?;
            } else {
                cfg.set(k, unquote(v)).map_err(lerr)?;
            }
            seen.push(k.to_string());
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Sets one key from its text value (no range check; see [`Config::validate`]).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let u = || parse_u64(value);
        match key {
            "mesh_width" => {
                self.mesh_width = u32::try_from(u()?).map_err(|_| "mesh_width too large")?
            }
            "mesh_height" => {
                self.mesh_height = u32::try_from(u()?).map_err(|_| "mesh_height too large")?
            }
            "clock_ghz" => {
                self.clock_ghz = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{value}` is not a number"))?
            }
            "sram_bytes" => self.sram_bytes = u()?,
            "mx_m" => self.mx_m = u()?,
            "mx_n" => self.mx_n = u()?,
            "mx_k" => self.mx_k = u()?,
            "mx_f32_divisor" => self.mx_f32_divisor = u()?,
            "mx_latency" => self.mx_latency = u()?,
            "vx_bytes_per_cycle" => self.vx_bytes_per_cycle = u()?,
            "vx_latency" => self.vx_latency = u()?,
            "vx_slow_divisor" => self.vx_slow_divisor = u()?,
            "dma_bytes_per_cycle" => self.dma_bytes_per_cycle = u()?,
            "dma_setup" => self.dma_setup = u()?,
            "dma_max_outstanding" => self.dma_max_outstanding = u()?,
            "hbm_bytes" => self.hbm_bytes = u()?,
            "hbm_bytes_per_cycle" => self.hbm_bytes_per_cycle = u()?,
            "hbm_latency" => self.hbm_latency = u()?,
            "hbm_edges" => self.hbm_edges = u()?,
            "link_bytes_per_cycle" => self.link_bytes_per_cycle = u()?,
            "hop_cycles" => self.hop_cycles = u()?,
            "router_cycles" => self.router_cycles = u()?,
            "sync_cycles" => self.sync_cycles = u()?,
            "seed" => self.seed = u()?,
            "timing_only" => self.timing_only = parse_bool(value)?,
            "trace" => self.trace = parse_bool(value)?,
            "max_host_bytes" => self.max_host_bytes = u()?,
            other => {
                return Err(format!(
                    "unknown key `{other}` (keys: preset, {})",
                    KEYS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.mesh_width as usize * self.mesh_height as usize
    }

    /// Peak MACs per cycle of the whole chip for bf16/CFP8 operands.
    pub fn peak_macs_per_cycle(&self) -> u64 {
        self.mx_m * self.mx_n * self.mx_k * self.nodes() as u64
    }

    /// Number of HBM ports (one per row and edge; one per row on a one-column mesh).
    pub fn hbm_ports(&self) -> u64 {
        let edges = if self.mesh_width == 1 {
            1
        } else {
            self.hbm_edges
        };
        edges * u64::from(self.mesh_height)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn range(key: &'static str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
            if v < lo || v > hi {
                return Err(ConfigError::Range {
                    key,
                    value: v.to_string(),
                    msg: format!("must be in {lo}..={hi}"),
                });
            }
            Ok(())
        }
        range("mesh_width", u64::from(self.mesh_width), 1, 255)?;
        range("mesh_height", u64::from(self.mesh_height), 1, 255)?;
        if !(self.clock_ghz.is_finite() && self.clock_ghz > 0.0 && self.clock_ghz < 1e6) {
            return Err(ConfigError::Range {
                key: "clock_ghz",
                value: self.clock_ghz.to_string(),
                msg: "must be a positive number".into(),
            });
        }
        range("sram_bytes", self.sram_bytes, 1, 1 << 24)?;
        let c = MAX_CYCLES_PARAM;
        range("mx_m", self.mx_m, 1, 1024)?;
        range("mx_n", self.mx_n, 1, 1024)?;
        range("mx_k", self.mx_k, 1, 1024)?;
        range("mx_f32_divisor", self.mx_f32_divisor, 1, 1 << 16)?;
        range("mx_latency", self.mx_latency, 0, c)?;
        range("vx_bytes_per_cycle", self.vx_bytes_per_cycle, 4, 1 << 16)?;
        range("vx_latency", self.vx_latency, 0, c)?;
        range("vx_slow_divisor", self.vx_slow_divisor, 1, 1 << 16)?;
        range("dma_bytes_per_cycle", self.dma_bytes_per_cycle, 1, 1 << 32)?;
        range("dma_setup", self.dma_setup, 1, c)?;
        range("dma_max_outstanding", self.dma_max_outstanding, 1, 1 << 16)?;
        range("hbm_bytes", self.hbm_bytes, 0, 1 << 40)?;
        range("hbm_bytes_per_cycle", self.hbm_bytes_per_cycle, 1, 1 << 32)?;
        range("hbm_latency", self.hbm_latency, 0, c)?;
        range("hbm_edges", self.hbm_edges, 1, 2)?;
        range(
            "link_bytes_per_cycle",
            self.link_bytes_per_cycle,
            1,
            1 << 32,
        )?;
        range("hop_cycles", self.hop_cycles, 0, c)?;
        range("router_cycles", self.router_cycles, 0, c)?;
        range("sync_cycles", self.sync_cycles, 1, c)?;
        let sram_total = (self.nodes() as u128) * u128::from(self.sram_bytes);
        if sram_total > u128::from(self.max_host_bytes) {
            return Err(ConfigError::Range {
                key: "sram_bytes",
                value: self.sram_bytes.to_string(),
                msg: format!(
                    "{} nodes × {} bytes of SRAM exceed max_host_bytes = {}",
                    self.nodes(),
                    self.sram_bytes,
                    self.max_host_bytes
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_overrides() {
        let c =
            Config::from_text("preset = \"4x4\"\nhop_cycles = 7 # slower\n\ntiming_only = true\n")
                .unwrap();
        assert_eq!(
            (c.mesh_width, c.mesh_height, c.hop_cycles, c.timing_only),
            (4, 4, 7, true)
        );
        let d1 = Config::preset("d1").unwrap();
        assert_eq!(d1.nodes(), 360);
        assert_eq!(d1.peak_macs_per_cycle(), 360 * 256);
        assert_eq!(Config::preset("1x1").unwrap().hbm_ports(), 1);
        assert_eq!(Config::preset("2x2").unwrap().hbm_ports(), 4);
        for k in KEYS {
            // Every documented key is settable.
            let mut c = Config::default();
            let v = if *k == "timing_only" || *k == "trace" {
                "true"
            } else {
                "2"
            };
            c.set(k, v).unwrap();
        }
    }

    #[test]
    fn errors() {
        let e = Config::from_text("mesh_width = 2\nbogus = 1\n").unwrap_err();
        assert!(matches!(e, ConfigError::Line { line: 2, .. }), "{e}");
        assert!(e.to_string().contains("unknown key `bogus`"));
        assert!(Config::from_text("hop_cycles = 1\npreset = 2x2").is_err());
        assert!(Config::from_text("preset = 9x9").is_err());
        assert!(Config::from_text("mesh_width = 1\nmesh_width = 2").is_err());
        assert!(Config::from_text("mesh_width = -1").is_err());
        assert!(Config::from_text("mesh_width = 256").is_err());
        assert!(Config::from_text("sram_bytes = 0x1000001").is_err());
        assert!(Config::from_text("mesh_width = 99999999999").is_err());
        // Huge SRAM in total: 255x255 nodes × 16 MiB is over the host limit.
        let e = Config::from_text("mesh_width = 255\nmesh_height = 255\nsram_bytes = 0x1000000")
            .unwrap_err();
        assert!(e.to_string().contains("max_host_bytes"), "{e}");
        assert!(Config::from_text("clock_ghz = nan").is_err());
    }
}
