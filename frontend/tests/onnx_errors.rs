//! Hostile and broken ONNX models give clear errors, never a panic or a huge allocation.

use std::path::{Path, PathBuf};

use prost::Message;
use terafab_frontend::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto::Dimension,
    tensor_shape_proto::dimension, type_proto,
};
use terafab_frontend::onnx::{ImportOptions, decode_model, import_model};
use terafab_frontend::{FrontendError, load_model};

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d)),
                            denotation: String::new(),
                        })
                        .collect(),
                }),
            })),
            denotation: String::new(),
        }),
        doc_string: String::new(),
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: format!("{op}_{}", outputs[0]),
        op_type: op.into(),
        ..Default::default()
    }
}

fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            node: nodes,
            name: "g".into(),
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("onnx_errors")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn import_err(m: &ModelProto, dir: Option<&Path>) -> String {
    match import_model(m, dir, &ImportOptions::default()) {
        Ok(_) => panic!("import should fail"),
        Err(e) => e.to_string(),
    }
}

fn relu_model() -> ModelProto {
    model(
        vec![node("Relu", &["x"], &["y"])],
        vec![value_info("x", &[2, 3])],
        vec![value_info("y", &[2, 3])],
    )
}

#[test]
fn truncated_and_corrupted_files() {
    let bytes = relu_model().encode_to_vec();
    for cut in 1..bytes.len() {
        // Every prefix either fails to decode or decodes to something the importer rejects
        // cleanly; none panics.
        if let Ok(m) = decode_model(&bytes[..cut]) {
            let _ = import_model(&m, None, &ImportOptions::default());
        }
    }
    let dir = scratch("truncated");
    let path = dir.join("cut.onnx");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_model(&path).unwrap_err();
    assert!(matches!(e, FrontendError::Onnx { .. }), "{e}");
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(chain.contains("malformed ONNX protobuf"), "{chain}");
    // Random garbage.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &garbage).unwrap();
    assert!(load_model(&path).is_err());
}

#[test]
fn a_cycle_is_an_error() {
    let m = model(
        vec![node("Relu", &["b"], &["a"]), node("Relu", &["a"], &["b"])],
        vec![value_info("x", &[2])],
        vec![value_info("b", &[2])],
    );
    let e = import_err(&m, None);
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn a_missing_input_is_an_error() {
    let m = model(
        vec![node("Relu", &["nowhere"], &["y"])],
        vec![value_info("x", &[2])],
        vec![value_info("y", &[2])],
    );
    let e = import_err(&m, None);
    assert!(
        e.contains("`nowhere`") && e.contains("not a graph input"),
        "{e}"
    );
}

#[test]
fn huge_dims_are_refused_without_allocating() {
    // An initializer that claims 2^40 x 2^40 elements but holds none.
    let mut m = relu_model();
    let g = m.graph.as_mut().unwrap();
    g.initializer.push(TensorProto {
        name: "w".into(),
        dims: vec![1 << 40, 1 << 40],
        data_type: 1,
        ..Default::default()
    });
    g.node.push(node("Add", &["x", "w"], &["z"]));
    let e = import_err(&m, None);
    assert!(e.contains("initializer `w`"), "{e}");
    // A graph input of 2^40 x 2^40 floats: the shape is representable, but running it fails
    // cleanly (allocation errors, no abort).
    let m = model(
        vec![node("Relu", &["x"], &["y"])],
        vec![value_info("x", &[1 << 40, 1 << 40])],
        vec![value_info("y", &[1 << 40, 1 << 40])],
    );
    let e = import_err(&m, None);
    assert!(e.contains("overflows") || e.contains("allocate"), "{e}");
    // ConstantOfShape asked for 2^40 elements: refused at run time, not at import.
    let shape = TensorProto {
        name: "s".into(),
        dims: vec![1],
        data_type: 7,
        int64_data: vec![1 << 40],
        ..Default::default()
    };
    let mut m = model(
        vec![node("ConstantOfShape", &["s"], &["y"])],
        vec![],
        vec![value_info("y", &[1 << 40])],
    );
    m.graph.as_mut().unwrap().initializer.push(shape);
    if let Ok(module) = import_model(&m, None, &ImportOptions::default()) {
        let f = module.entry().unwrap();
        let e = terafab_ir::interp::run_function(f, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("allocate"), "{e}");
    }
}

fn external_model(location: &str) -> ModelProto {
    let mut m = relu_model();
    let g = m.graph.as_mut().unwrap();
    g.initializer.push(TensorProto {
        name: "w".into(),
        dims: vec![2, 3],
        data_type: 1,
        data_location: 1,
        external_data: vec![StringStringEntryProto {
            key: "location".into(),
            value: location.into(),
        }],
        ..Default::default()
    });
    g.node.push(node("Add", &["y", "w"], &["z"]));
    g.output = vec![value_info("z", &[2, 3])];
    m
}

#[test]
fn external_data_stays_in_the_model_directory() {
    let dir = scratch("external");
    let model_dir = dir.join("model");
    std::fs::create_dir_all(&model_dir).unwrap();
    let data: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    std::fs::write(dir.join("secret.bin"), &data).unwrap();
    std::fs::write(model_dir.join("w.bin"), &data).unwrap();
    // Inside the directory: fine.
    let m = external_model("w.bin");
    assert!(import_model(&m, Some(&model_dir), &ImportOptions::default()).is_ok());
    // `..` and absolute paths are refused.
    let e = import_err(&external_model("../secret.bin"), Some(&model_dir));
    assert!(e.contains("escapes the model directory"), "{e}");
    let abs = dir.join("secret.bin");
    let e = import_err(&external_model(abs.to_str().unwrap()), Some(&model_dir));
    assert!(e.contains("absolute"), "{e}");
    // A symlink pointing outside is refused too.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.join("secret.bin"), model_dir.join("link.bin")).unwrap();
        let e = import_err(&external_model("link.bin"), Some(&model_dir));
        assert!(e.contains("outside the model directory"), "{e}");
    }
    // Too short a file is refused before reading.
    std::fs::write(model_dir.join("short.bin"), &data[..8]).unwrap();
    let e = import_err(&external_model("short.bin"), Some(&model_dir));
    assert!(e.contains("past the end"), "{e}");
}

#[test]
fn unsupported_ops_and_attributes_name_the_node() {
    let m = model(
        vec![node("FrobnicateV2", &["x"], &["y"])],
        vec![value_info("x", &[2])],
        vec![value_info("y", &[2])],
    );
    let e = import_err(&m, None);
    assert!(
        e.contains("FrobnicateV2_y") && e.contains("FrobnicateV2") && e.contains("opset 17"),
        "{e}"
    );
    let mut n = node("Relu", &["x"], &["y"]);
    n.attribute.push(AttributeProto {
        name: "bogus".into(),
        r#type: 2,
        i: 1,
        ..Default::default()
    });
    let m = model(
        vec![n],
        vec![value_info("x", &[2])],
        vec![value_info("y", &[2])],
    );
    let e = import_err(&m, None);
    assert!(e.contains("attribute `bogus`"), "{e}");
}
