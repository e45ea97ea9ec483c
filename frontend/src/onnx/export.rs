//! Writing a model back: a decoded `ModelProto` with some initializers replaced by new values
//! (`terafab train --out`), encoded with prost.

use prost::Message;
use terafab_ir::{DType, Tensor};

use super::proto::{DataType, ModelProto, TensorProto};

/// Why a model could not be written back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExportError {
    #[error("the model has no graph")]
    NoGraph,
    #[error("no initializer named `{0}` in the model's graph")]
    UnknownInitializer(String),
    #[error("initializer `{name}`: writing {dtype} tensors is not supported (f32, f64)")]
    Unsupported { name: String, dtype: DType },
}

/// The ONNX tensor `name` holding `t` as little-endian raw data.
pub fn tensor_proto(name: &str, t: &Tensor) -> Result<TensorProto, ExportError> {
    let (data_type, raw_data): (DataType, Vec<u8>) = match t.dtype() {
        DType::F32 => (
            DataType::Float,
            t.as_slice::<f32>()
                .unwrap_or_default()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F64 => (
            DataType::Double,
            t.as_slice::<f64>()
                .unwrap_or_default()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        dtype => {
            return Err(ExportError::Unsupported {
                name: name.to_string(),
                dtype,
            });
        }
    };
    Ok(TensorProto {
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: data_type as i32,
        name: name.to_string(),
        raw_data,
        ..Default::default()
    })
}

/// Replace the main graph's initializers named in `updates` by the given values (as raw data in
/// the model: an initializer stored as external data is written inline, its external reference
/// dropped) and encode the model.
pub fn with_initializers(
    model: &ModelProto,
    updates: &[(String, Tensor)],
) -> Result<Vec<u8>, ExportError> {
    let mut m = model.clone();
    let g = m.graph.as_mut().ok_or(ExportError::NoGraph)?;
    for (name, t) in updates {
        let init = g
            .initializer
            .iter_mut()
            .find(|i| &i.name == name)
            .ok_or_else(|| ExportError::UnknownInitializer(name.clone()))?;
        let doc = std::mem::take(&mut init.doc_string);
        *init = tensor_proto(name, t)?;
        init.doc_string = doc;
    }
    Ok(m.encode_to_vec())
}
