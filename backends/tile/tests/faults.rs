//! Faulty programs, binaries and configurations stop with typed errors naming the node,
//! engine, program counter and instruction; hostile sizes give errors, never aborts.

use terafab_tile::{Config, DecodeError, Engine, Program, SimError, Simulator};

fn run(preset: &str, text: &str) -> Result<terafab_tile::Report, SimError> {
    let program = Program::parse(text).expect("parse");
    Simulator::new(Config::preset(preset).expect("preset"), program)?.run()
}

const HBM: &str = ".hbm X addr=0x0, dtype=f32, shape=16, role=input\n";

#[test]
fn sram_out_of_range() {
    // SRAM is 1.25 MiB = 0x140000 bytes; the load ends 0x30 past it.
    let e = run(
        "1x1",
        &format!("{HBM}.node 0,0\n dma.ld dst=0x13fff0, src=X, len=64\n end\n"),
    )
    .unwrap_err();
    match &e {
        SimError::SramOutOfRange {
            site,
            addr,
            end,
            size,
        } => {
            assert_eq!(site.node, (0, 0));
            assert_eq!(site.engine, Some(Engine::Dma));
            assert_eq!(site.pc, 0);
            assert!(
                site.instr.starts_with("dma.ld dst=0x13fff0"),
                "{}",
                site.instr
            );
            assert_eq!((*addr, *end, *size), (0x13fff0, 0x140030, 0x140000));
        }
        other => panic!("unexpected {other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("node (0,0) engine dma pc 0"), "{msg}");
    // A matrix operand past the end (a hostile 4095-row tile).
    let e = run(
        "1x1",
        ".node 0,0\n mm dst=0, a=0, b=0, m=4095, n=4095, k=4095, atype=bf16, btype=bf16\n end\n",
    )
    .unwrap_err();
    assert!(
        matches!(e, SimError::SramOutOfRange { ref site, .. } if site.engine == Some(Engine::Mx)),
        "{e}"
    );
    // A send whose destination region is outside the receiver's SRAM names the receiver.
    let e = run(
        "2x2",
        ".node 0,0\n send dst=0x13ffff, src=0, len=2, x=1, y=0\n end\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("at node (1,0)"), "{e}");
}

#[test]
fn hbm_out_of_range() {
    let e = run(
        "1x1",
        &format!("{HBM}.node 0,0\n dma.ld dst=0, src=X + 32, len=64\n end\n"),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            SimError::HbmOutOfRange {
                addr: 32,
                end: 96,
                size: 64,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn overlapping_writes_in_flight() {
    // Two loads into overlapping SRAM with nothing ordering them: the second starts at 8
    // while the first is in flight until 209.
    let e = run(
        "1x1",
        &format!("{HBM}.node 0,0\n dma.ld dst=0x0, src=X, len=64\n dma.ld dst=0x20, src=X, len=64\n end\n"),
    )
    .unwrap_err();
    match e {
        SimError::Race {
            site,
            what,
            other,
            until,
            ..
        } => {
            assert_eq!((site.pc, other.pc, what, until), (1, 0, "write/write", 209));
            assert_eq!(site.engine, Some(Engine::Dma));
        }
        other => panic!("unexpected {other}"),
    }
    // The same with a semaphore between them is fine.
    run(
        "1x1",
        &format!("{HBM}.node 0,0\n dma.ld dst=0x0, src=X, len=64 signal=0\n dma.ld dst=0x20, src=X, len=64 wait=0\n end\n"),
    )
    .unwrap();
    // Interleaved rows do not overlap: even and odd 16-byte rows.
    run(
        "1x1",
        &format!("{HBM}.node 0,0\n dma.ld dst=0x0, src=X, len=16, n1=2, dstride1=32\n dma.ld dst=0x10, src=X+32, len=16, n1=2, dstride1=32\n end\n"),
    )
    .unwrap();
}

#[test]
fn read_while_written_is_a_race() {
    // The vector engine reads what the DMA engine is still loading.
    let e = run(
        "1x1",
        &format!("{HBM}.node 0,0\n dma.ld dst=0x0, src=X, len=64\n vneg dst=0x100, src=0x0, cols=16, itype=f32, otype=f32\n end\n"),
    )
    .unwrap_err();
    match e {
        SimError::Race {
            site, other, what, ..
        } => {
            assert_eq!(
                (site.engine, site.pc, other.engine, other.pc),
                (Some(Engine::Vx), 1, Some(Engine::Dma), 0)
            );
            assert_eq!(what, "read/write");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn deadlock_on_tokens() {
    // mx waits for vx's token and vx for mx's.
    let e = run(
        "1x1",
        ".node 0,0\n sem.wait engine=mx, sem=0\n sem.signal engine=mx, sem=1\n sem.wait engine=vx, sem=1\n sem.signal engine=vx, sem=0\n end\n",
    )
    .unwrap_err();
    match &e {
        SimError::Deadlock {
            site,
            reason,
            blocked,
        } => {
            assert_eq!(
                (site.node, site.engine, site.pc),
                ((0, 0), Some(Engine::Mx), 0)
            );
            assert_eq!(site.instr, "sem.wait engine=mx, sem=0");
            assert_eq!(reason, "waiting on semaphore 0 (holds 0, needs 1)");
            assert_eq!(*blocked, 2);
        }
        other => panic!("unexpected {other}"),
    }
    // A barrier one node never reaches.
    let e = run(
        "2x2",
        ".nodes 0..2, 0..1\n barrier engine=dma\n end\n.node 0,1\n barrier engine=vx\n end\n.node 1,1\n end\n",
    )
    .unwrap_err();
    match &e {
        SimError::Deadlock {
            reason, blocked, ..
        } => {
            assert_eq!(reason, "waiting at barrier #0: 3 of 4 nodes arrived");
            assert_eq!(*blocked, 3);
        }
        other => panic!("unexpected {other}"),
    }
    // A send whose remote token is awaited on the wrong node.
    let e = run("2x2", ".node 0,0\n send dst=0, src=0, len=4, x=1, y=0, rsem=3\n sem.wait engine=vx, sem=3\n end\n.node 1,0\n end\n")
        .unwrap_err();
    assert!(
        matches!(e, SimError::Deadlock { ref site, .. } if site.engine == Some(Engine::Vx)),
        "{e}"
    );
}

#[test]
fn bad_encoding() {
    let p = Program::parse(&format!("{HBM}.node 1,0\n dma.ld dst=0, src=X, len=64 signal=0\n vneg dst=0x100, src=0, cols=16, itype=f32, otype=f32 wait=0\n end\n")).unwrap();
    let bin = p.encode().unwrap();
    assert_eq!(Program::decode(&bin).unwrap(), p);
    let instr_at = |pc: usize| bin.len() - (3 - pc) * 32;
    // An unknown opcode at pc 1.
    let mut bad = bin.clone();
    bad[instr_at(1)] = 0xEE;
    match Program::decode(&bad).unwrap_err() {
        DecodeError::BadInstruction {
            node,
            pc,
            engine,
            reason,
            ..
        } => {
            assert_eq!((node, pc, engine), ((1, 0), 1, None));
            assert!(reason.contains("unknown opcode 0xee"), "{reason}");
        }
        other => panic!("unexpected {other}"),
    }
    // An invalid element type code (5) in the vneg's itype: names the vector engine.
    let mut bad = bin.clone();
    let word = instr_at(1);
    // vneg fields: dst 24, src 24, rows 12, cols 12, dpitch 24, spitch 24, then itype at bit
    // 32 + 120 = 152 → byte 19.
    bad[word + 19] = 5;
    match Program::decode(&bad).unwrap_err() {
        DecodeError::BadInstruction {
            pc, engine, reason, ..
        } => {
            assert_eq!((pc, engine), (1, Some(Engine::Vx)));
            assert!(reason.contains("invalid element type"), "{reason}");
        }
        other => panic!("unexpected {other}"),
    }
    // Reserved header bits.
    let mut bad = bin.clone();
    bad[instr_at(0) + 3] = 0x80;
    assert!(matches!(
        Program::decode(&bad),
        Err(DecodeError::BadInstruction { pc: 0, .. })
    ));
    // Trailing nonzero bits after `end`'s (empty) fields.
    let mut bad = bin.clone();
    bad[instr_at(2) + 31] = 1;
    assert!(matches!(
        Program::decode(&bad),
        Err(DecodeError::BadInstruction { pc: 2, .. })
    ));
    // Truncated, bad magic, trailing bytes, hostile counts.
    assert!(matches!(
        Program::decode(&bin[..10]),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        Program::decode(&bin[..bin.len() - 1]),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        Program::decode(b"nonsense"),
        Err(DecodeError::BadMagic)
    ));
    let mut long = bin.clone();
    long.push(0);
    assert!(matches!(
        Program::decode(&long),
        Err(DecodeError::Malformed { .. })
    ));
    let mut huge = terafab_tile::encode::MAGIC.to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Program::decode(&huge),
        Err(DecodeError::Malformed { .. })
    ));
    // Through the simulator.
    let mut bad = bin.clone();
    bad[instr_at(1)] = 0xEE;
    let e = Simulator::from_binary(Config::preset("2x2").unwrap(), &bad).unwrap_err();
    assert!(matches!(e, SimError::Decode(_)));
    assert!(e.to_string().contains("node (1,0) pc 1"), "{e}");
}

#[test]
fn invalid_operands() {
    let e = run(
        "2x2",
        ".node 0,0\n send dst=0, src=0, len=4, x=2, y=0\n end\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("outside the 2x2 mesh"), "{e}");
    let e = run("1x1", ".node 0,0\n dma.cp dst=0, src=64, len=0\n end\n").unwrap_err();
    assert!(matches!(e, SimError::InvalidOperand { .. }), "{e}");
    let e = run(
        "1x1",
        ".node 0,0\n mcast dst=0, src=0, len=4, x0=0, y0=0, x1=0, y1=1\n end\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("outside"), "{e}");
    // A stride-0 transfer of 4 GiB+ is refused before it runs.
    let e = run(
        "1x1",
        ".node 0,0\n dma.cp dst=0, src=0, len=0xffffff, n1=4095, n2=4095\n end\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("exceeds"), "{e}");
}

#[test]
fn hostile_sizes_are_errors() {
    let cfg = || Config::preset("1x1").unwrap();
    // A buffer beyond the configured HBM.
    let p = Program::parse(".hbm B addr=0x8000000000, dtype=f32, shape=16, role=input\n").unwrap();
    assert!(matches!(
        Simulator::new(cfg(), p),
        Err(SimError::BufferOutsideHbm { .. })
    ));
    // Inside HBM (16 GiB) but over the host memory limit (4 GiB).
    let p =
        Program::parse(".hbm B addr=0x0, dtype=f32, shape=1024x1024x1024x3, role=input\n").unwrap();
    assert!(matches!(
        Simulator::new(cfg(), p),
        Err(SimError::TooLarge { .. })
    ));
    // A shape whose size overflows.
    let p = Program::parse(".hbm B addr=0x0, dtype=f32, shape=4294967296x4294967296, role=input\n")
        .unwrap_err();
    assert!(p.msg.contains("overflows"), "{p}");
    // A huge mesh of huge SRAMs.
    assert!(
        Config::from_text("mesh_width = 255\nmesh_height = 255\nsram_bytes = 16777216").is_err()
    );
    assert!(Config::from_text("hbm_bytes = 0x20000000000").is_err());
    // A program for a node outside the mesh.
    let p = Program::parse(".node 3,0\n end\n").unwrap();
    assert!(matches!(
        Simulator::new(cfg(), p),
        Err(SimError::NodeOutsideMesh { x: 3, .. })
    ));
    // Host I/O mistakes.
    let mut s = Simulator::new(cfg(), Program::parse(HBM).unwrap()).unwrap();
    assert!(matches!(
        s.load_hbm_f32("X", &[1.0; 3]),
        Err(SimError::SizeMismatch { .. })
    ));
    assert!(matches!(
        s.load_hbm("Y", &[]),
        Err(SimError::UnknownBuffer(_))
    ));
    assert!(matches!(s.read_hbm("Y"), Err(SimError::UnknownBuffer(_))));
}

#[test]
fn trace_has_one_track_per_engine_per_node() {
    let p = Program::parse(include_str!("../examples/multicast.tasm")).unwrap();
    let mut s = Simulator::new(Config::preset("2x2").unwrap(), p).unwrap();
    let r = s.run().unwrap();
    let dir = std::env::temp_dir().join(format!("terafab-tile-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trace.json");
    r.write_trace(&path).unwrap();
    let json = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(json.starts_with("{\"displayTimeUnit\":\"ns\",\"traceEvents\":["));
    assert!(json.trim_end().ends_with("]}"));
    // 4 nodes × 4 engines named, one complete event per instruction.
    assert_eq!(json.matches("\"thread_name\"").count(), 16);
    assert_eq!(json.matches("\"process_name\"").count(), 4);
    assert_eq!(json.matches("\"ph\":\"X\"").count() as u64, r.instructions);
    assert!(json.contains("\"name\":\"mcast\",\"cat\":\"net\",\"ph\":\"X\",\"pid\":0,\"tid\":3"));
    // (1,1) is pid 3; its store is on the DMA track (tid 0).
    assert!(json.contains("\"name\":\"dma.st\",\"cat\":\"dma\",\"ph\":\"X\",\"pid\":3,\"tid\":0"));
    // Braces balance.
    assert_eq!(json.matches('{').count(), json.matches('}').count());
}
