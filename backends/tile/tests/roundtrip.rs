//! Property tests: instructions and programs round-trip through the binary encoding and the
//! assembly text.

use proptest::prelude::*;
use terafab_tile::ElemType;
use terafab_tile::encode::{decode_instruction, encode_instruction};
use terafab_tile::isa::{FieldKind, Instruction, OPS, Op, WORD_BYTES};
use terafab_tile::{Buffer, Program, Role, Stream};

fn elem_code() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1u64),
        (0u64..64).prop_map(|b| 2 | (b << 3)),
        (0u64..64).prop_map(|b| 3 | (b << 3)),
    ]
}

fn field_value(kind: FieldKind, bits: u32) -> BoxedStrategy<u64> {
    let max = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    match kind {
        FieldKind::Uint | FieldKind::Addr => {
            prop_oneof![Just(0u64), Just(1u64), Just(max), 0..=max,].boxed()
        }
        FieldKind::Elem => elem_code().boxed(),
        FieldKind::Bool => (0u64..2).boxed(),
        FieldKind::Engine => (0u64..4).boxed(),
        FieldKind::Bcast => (0u64..4).boxed(),
        FieldKind::F32 => any::<u32>().prop_map(u64::from).boxed(),
        FieldKind::Sem => prop_oneof![Just(0u64), (0u64..64).prop_map(|s| 0x40 | s)].boxed(),
    }
}

/// A random instruction of any opcode with every field in range.
fn instruction() -> impl Strategy<Value = Instruction> {
    (0..OPS.len())
        .prop_flat_map(|i| {
            let info = &OPS[i];
            let fields: Vec<BoxedStrategy<u64>> = info
                .fields
                .iter()
                .map(|f| {
                    // `sem` ids are 6-bit values of a Uint field.
                    if f.key == "sem" {
                        (0u64..64).boxed()
                    } else {
                        field_value(f.kind, f.bits)
                    }
                })
                .collect();
            (
                Just(info.opcode),
                fields,
                proptest::option::of(0u8..64),
                proptest::option::of(0u8..64),
            )
        })
        .prop_map(|(opcode, raws, wait, signal)| Instruction {
            op: Op::from_raw(opcode, &raws).expect("generated fields are valid"),
            wait,
            signal,
        })
}

fn buffer(i: usize) -> impl Strategy<Value = Buffer> {
    (
        0u64..(1 << 40),
        elem_code(),
        proptest::collection::vec(1u64..64, 0..4),
        0usize..4,
    )
        .prop_map(move |(addr, code, shape, role)| Buffer {
            name: format!("buf_{i}"),
            addr,
            dtype: ElemType::from_code(code).expect("valid code"),
            shape,
            role: Role::ALL[role],
        })
}

fn program() -> impl Strategy<Value = Program> {
    (
        proptest::collection::vec(Just(()), 0..4),
        proptest::collection::btree_set((0u8..=255, 0u8..=255), 0..4),
    )
        .prop_flat_map(|(bufs, nodes)| {
            let buffers: Vec<_> = (0..bufs.len()).map(buffer).collect();
            let streams: Vec<_> = nodes
                .into_iter()
                .map(|node| {
                    proptest::collection::vec(
                        instruction().prop_filter("no end inside", |i| i.op != Op::End),
                        0..6,
                    )
                    .prop_map(move |mut instrs| {
                        instrs.push(Instruction::from(Op::End));
                        Stream { node, instrs }
                    })
                })
                .collect();
            (buffers, streams)
        })
        .prop_map(|(buffers, streams)| Program { buffers, streams })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn binary_round_trip(i in instruction()) {
        let word = encode_instruction(&i).expect("encodes");
        prop_assert_eq!(decode_instruction(&word).expect("decodes"), i);
    }

    #[test]
    fn text_round_trip(i in instruction()) {
        let text = i.to_string();
        let parsed = terafab_tile::asm::parse_instruction(&text, &Default::default())
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(parsed, i, "{}", text);
    }

    #[test]
    fn decoded_words_re_encode_identically(bytes in proptest::collection::vec(any::<u8>(), WORD_BYTES), small in any::<bool>()) {
        let mut word = [0u8; WORD_BYTES];
        word.copy_from_slice(&bytes);
        if small {
            // Make a decodable word likely: a known opcode, clear reserved and high bits.
            word[0] = OPS[usize::from(word[0]) % OPS.len()].opcode;
            word[2] &= 0x3F;
            word[3] = 0;
            for b in word.iter_mut().skip(12) { *b = 0; }
        }
        if let Ok(i) = decode_instruction(&word) {
            prop_assert_eq!(encode_instruction(&i).expect("encodes"), word);
        }
    }

    #[test]
    fn program_round_trips(p in program()) {
        let bin = p.encode().expect("encodes");
        prop_assert_eq!(&Program::decode(&bin).expect("decodes"), &p);
        let text = p.to_text();
        let parsed = Program::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&parsed, &p);
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut data = terafab_tile::encode::MAGIC.to_vec();
        data.extend_from_slice(&bytes);
        let _ = Program::decode(&data);
        let _ = Program::decode(&bytes);
    }

    #[test]
    fn parsing_garbage_never_panics(s in "[ -~\n]{0,200}") {
        let _ = Program::parse(&s);
        let _ = terafab_tile::Config::from_text(&s);
    }
}

#[test]
fn every_opcode_is_exercised_by_the_text_form() {
    for info in OPS {
        let raws: Vec<u64> = info.fields.iter().map(|f| f.default.unwrap_or(0)).collect();
        let op = Op::from_raw(info.opcode, &raws).unwrap();
        assert_eq!(op.mnemonic(), info.mnemonic);
        assert_eq!(op.opcode(), info.opcode);
        let i = Instruction::from(op);
        let w = encode_instruction(&i).unwrap();
        assert_eq!(decode_instruction(&w).unwrap(), i);
    }
}
