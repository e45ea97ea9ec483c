//! Performance of generated GEMMs: 1024×1024×1024 bf16 on the 1x1, 2x2 and 4x4 presets,
//! simulated `timing_only`. Prints cycles, matrix-engine utilization
//! (`MACs / (cycles · nodes · mx_m·mx_n·mx_k)`), HBM and mesh bytes, the roofline bound and
//! the achieved fraction of it.
//!
//! `cargo bench -p terafab-tile --bench gemm`

use terafab_tile::{Config, ElemType, Epilogue, GemmSpec, Simulator, gemm_plan, gemm_program};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = GemmSpec {
        batch: 1,
        m: 1024,
        n: 1024,
        k: 1024,
        a_type: ElemType::Bf16,
        b_type: ElemType::Bf16,
        bias: false,
        relu: false,
        epilogue: Epilogue::NONE,
        b_gather: None,
    };
    for preset in ["1x1", "2x2", "4x4"] {
        let mut cfg = Config::preset(preset)?;
        cfg.timing_only = true;
        let plan = gemm_plan(&cfg, &spec)?;
        let program = gemm_program(&cfg, &spec)?;
        let mut sim = Simulator::new(cfg.clone(), program)?;
        let r = sim.run()?;
        let peak = cfg.nodes() as f64 * (cfg.mx_m * cfg.mx_n * cfg.mx_k) as f64;
        let util = r.macs as f64 / (r.cycles as f64 * peak);
        println!(
            "gemm 1024^3 bf16 on {preset}: tiles {}x{}x{} multicast {}: {} cycles, mx utilization {:.1}%, \
             HBM read {} B write {} B, mesh payload {} B, roofline {:.0} cycles ({}), achieved {:.1}%",
            plan.tile_m,
            plan.tile_n,
            plan.tile_k,
            plan.multicast,
            r.cycles,
            util * 100.0,
            r.hbm_read_bytes,
            r.hbm_write_bytes,
            r.mesh_payload_bytes,
            r.roofline.bound_cycles,
            r.roofline.limiter,
            r.achieved_fraction() * 100.0
        );
    }
    Ok(())
}
