//! ONNX tensors (`TensorProto`) to IR tensors: typed fields, `raw_data`, and external data.
//!
//! External data is read only from files inside the model's directory: absolute paths and any
//! path with a `..` component are refused, and the resolved file must stay under the directory
//! (symlinks included). Sizes are checked against the file before anything is allocated.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use terafab_ir::half::{bf16, f16};
use terafab_ir::{
    CF8E4M3, CF8E5M2, DType, Data, Element, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, Tensor,
};

use super::proto::{DataType, TensorProto};

/// Why a tensor could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TensorReadError {
    #[error("element type {0} is not supported")]
    UnsupportedType(String),
    #[error("negative or overflowing dims {0:?}")]
    BadDims(Vec<i64>),
    #[error("holds {actual} elements (or bytes) where its dims {dims:?} need {expected}")]
    WrongSize {
        dims: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error("external data: {0}")]
    External(String),
    #[error("external data file {path}: {source}")]
    ExternalIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tensor(#[from] terafab_ir::TensorError),
}

/// The IR element type of an ONNX `DataType` code, or an error naming the ONNX type.
pub fn dtype_of(code: i32) -> Result<DType, TensorReadError> {
    let dt = DataType::try_from(code)
        .map_err(|_| TensorReadError::UnsupportedType(format!("#{code}")))?;
    Ok(match dt {
        DataType::Float => DType::F32,
        DataType::Double => DType::F64,
        DataType::Float16 => DType::F16,
        DataType::Bfloat16 => DType::BF16,
        DataType::Float8e4m3fn => DType::F8E4M3FN,
        DataType::Float8e4m3fnuz => DType::F8E4M3FNUZ,
        DataType::Float8e5m2 => DType::F8E5M2,
        DataType::Float8e5m2fnuz => DType::F8E5M2FNUZ,
        DataType::Int8 => DType::I8,
        DataType::Int16 => DType::I16,
        DataType::Int32 => DType::I32,
        DataType::Int64 => DType::I64,
        DataType::Uint8 => DType::U8,
        DataType::Uint16 => DType::U16,
        DataType::Uint32 => DType::U32,
        DataType::Uint64 => DType::U64,
        DataType::Bool => DType::Bool,
        other => {
            return Err(TensorReadError::UnsupportedType(
                data_type_name(other).into(),
            ));
        }
    })
}

/// An IR element type that ONNX has no `DataType` for (Tesla's CFP8 types, `cf8e4m3` and
/// `cf8e5m2`: ONNX's float8 types all have NaN, and E5M2 has infinities, where CFP8 has neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("element type {0} has no ONNX data type")]
pub struct NoOnnxType(pub DType);

/// The ONNX `DataType` code of an IR element type, or an error for the types ONNX lacks.
pub fn data_type_of(d: DType) -> Result<DataType, NoOnnxType> {
    Ok(match d {
        DType::F32 => DataType::Float,
        DType::F64 => DataType::Double,
        DType::F16 => DataType::Float16,
        DType::BF16 => DataType::Bfloat16,
        DType::F8E4M3FN => DataType::Float8e4m3fn,
        DType::F8E4M3FNUZ => DataType::Float8e4m3fnuz,
        DType::F8E5M2 => DataType::Float8e5m2,
        DType::F8E5M2FNUZ => DataType::Float8e5m2fnuz,
        DType::I8 => DataType::Int8,
        DType::I16 => DataType::Int16,
        DType::I32 => DataType::Int32,
        DType::I64 => DataType::Int64,
        DType::U8 => DataType::Uint8,
        DType::U16 => DataType::Uint16,
        DType::U32 => DataType::Uint32,
        DType::U64 => DataType::Uint64,
        DType::Bool => DataType::Bool,
        DType::CF8E4M3 | DType::CF8E5M2 => return Err(NoOnnxType(d)),
    })
}

/// The ONNX spelling of a data type (`FLOAT8E4M3FN`, `STRING`, ...), for messages.
pub fn data_type_name(d: DataType) -> &'static str {
    match d {
        DataType::Undefined => "UNDEFINED",
        DataType::Float => "FLOAT",
        DataType::Uint8 => "UINT8",
        DataType::Int8 => "INT8",
        DataType::Uint16 => "UINT16",
        DataType::Int16 => "INT16",
        DataType::Int32 => "INT32",
        DataType::Int64 => "INT64",
        DataType::String => "STRING",
        DataType::Bool => "BOOL",
        DataType::Float16 => "FLOAT16",
        DataType::Double => "DOUBLE",
        DataType::Uint32 => "UINT32",
        DataType::Uint64 => "UINT64",
        DataType::Complex64 => "COMPLEX64",
        DataType::Complex128 => "COMPLEX128",
        DataType::Bfloat16 => "BFLOAT16",
        DataType::Float8e4m3fn => "FLOAT8E4M3FN",
        DataType::Float8e4m3fnuz => "FLOAT8E4M3FNUZ",
        DataType::Float8e5m2 => "FLOAT8E5M2",
        DataType::Float8e5m2fnuz => "FLOAT8E5M2FNUZ",
        DataType::Uint4 => "UINT4",
        DataType::Int4 => "INT4",
        DataType::Float4e2m1 => "FLOAT4E2M1",
        DataType::Float8e8m0 => "FLOAT8E8M0",
        DataType::Uint2 => "UINT2",
        DataType::Int2 => "INT2",
    }
}

/// Validate ONNX dims and return them as extents.
pub fn checked_dims(dims: &[i64], dtype: DType) -> Result<Vec<usize>, TensorReadError> {
    let out: Option<Vec<usize>> = dims.iter().map(|&d| usize::try_from(d).ok()).collect();
    let out = out.ok_or_else(|| TensorReadError::BadDims(dims.to_vec()))?;
    terafab_ir::tensor::checked_num_elements(&out, dtype)
        .map_err(|_| TensorReadError::BadDims(dims.to_vec()))?;
    Ok(out)
}

/// Read a `TensorProto` into an IR tensor. `model_dir` is where external data may live
/// (`None` refuses external data).
pub fn read_tensor(t: &TensorProto, model_dir: Option<&Path>) -> Result<Tensor, TensorReadError> {
    let dtype = dtype_of(t.data_type)?;
    let dims = checked_dims(&t.dims, dtype)?;
    let n: usize = dims.iter().product();
    if t.data_location == 1 || !t.external_data.is_empty() {
        let bytes = read_external(t, model_dir, n * dtype.size_bytes())?;
        return from_le_bytes(dtype, dims, &bytes);
    }
    if !t.raw_data.is_empty() || n == 0 {
        return from_le_bytes(dtype, dims, &t.raw_data);
    }
    macro_rules! typed {
        ($field:expr, $conv:expr) => {{
            let f = &$field;
            if f.len() != n {
                return Err(TensorReadError::WrongSize {
                    dims,
                    expected: n,
                    actual: f.len(),
                });
            }
            Ok(Tensor::from_vec(
                dims,
                f.iter().map($conv).collect::<Vec<_>>(),
            )?)
        }};
    }
    match dtype {
        DType::F32 => typed!(t.float_data, |&x| x),
        DType::F64 => typed!(t.double_data, |&x| x),
        DType::I64 => typed!(t.int64_data, |&x| x),
        DType::U64 => typed!(t.uint64_data, |&x| x),
        DType::U32 => typed!(t.uint64_data, |&x| x as u32),
        DType::I32 => typed!(t.int32_data, |&x| x),
        DType::I16 => typed!(t.int32_data, |&x| x as i16),
        DType::I8 => typed!(t.int32_data, |&x| x as i8),
        DType::U16 => typed!(t.int32_data, |&x| x as u16),
        DType::U8 => typed!(t.int32_data, |&x| x as u8),
        DType::Bool => typed!(t.int32_data, |&x| x != 0),
        DType::F16 => typed!(t.int32_data, |&x| f16::from_bits(x as u16)),
        DType::BF16 => typed!(t.int32_data, |&x| bf16::from_bits(x as u16)),
        // Float8 elements are their bytes, one per int32 (`as u8` keeps the low byte).
        DType::F8E4M3FN => typed!(t.int32_data, |&x| F8E4M3FN(x as u8)),
        DType::F8E4M3FNUZ => typed!(t.int32_data, |&x| F8E4M3FNUZ(x as u8)),
        DType::F8E5M2 => typed!(t.int32_data, |&x| F8E5M2(x as u8)),
        DType::F8E5M2FNUZ => typed!(t.int32_data, |&x| F8E5M2FNUZ(x as u8)),
        // Not produced by `dtype_of`: no ONNX data type stands for them.
        DType::CF8E4M3 | DType::CF8E5M2 => Err(TensorReadError::UnsupportedType(
            NoOnnxType(dtype).to_string(),
        )),
    }
}

/// Decode little-endian packed elements.
pub fn from_le_bytes(
    dtype: DType,
    dims: Vec<usize>,
    bytes: &[u8],
) -> Result<Tensor, TensorReadError> {
    let n: usize = dims.iter().product();
    let size = dtype.size_bytes();
    if bytes.len() != n * size {
        return Err(TensorReadError::WrongSize {
            dims,
            expected: n * size,
            actual: bytes.len(),
        });
    }
    fn decode<T: Element, const N: usize>(
        dims: Vec<usize>,
        bytes: &[u8],
        f: impl Fn([u8; N]) -> T,
    ) -> Result<Tensor, TensorReadError> {
        let v = bytes
            .chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N bytes")))
            .collect::<Vec<T>>();
        Ok(Tensor::from_vec(dims, v)?)
    }
    match dtype {
        DType::F32 => decode(dims, bytes, f32::from_le_bytes),
        DType::F64 => decode(dims, bytes, f64::from_le_bytes),
        DType::F16 => decode(dims, bytes, f16::from_le_bytes),
        DType::BF16 => decode(dims, bytes, bf16::from_le_bytes),
        DType::F8E4M3FN => decode(dims, bytes, F8E4M3FN::from_le_bytes),
        DType::F8E4M3FNUZ => decode(dims, bytes, F8E4M3FNUZ::from_le_bytes),
        DType::F8E5M2 => decode(dims, bytes, F8E5M2::from_le_bytes),
        DType::F8E5M2FNUZ => decode(dims, bytes, F8E5M2FNUZ::from_le_bytes),
        DType::CF8E4M3 => decode(dims, bytes, CF8E4M3::from_le_bytes),
        DType::CF8E5M2 => decode(dims, bytes, CF8E5M2::from_le_bytes),
        DType::I8 => decode(dims, bytes, i8::from_le_bytes),
        DType::I16 => decode(dims, bytes, i16::from_le_bytes),
        DType::I32 => decode(dims, bytes, i32::from_le_bytes),
        DType::I64 => decode(dims, bytes, i64::from_le_bytes),
        DType::U8 => decode(dims, bytes, u8::from_le_bytes),
        DType::U16 => decode(dims, bytes, u16::from_le_bytes),
        DType::U32 => decode(dims, bytes, u32::from_le_bytes),
        DType::U64 => decode(dims, bytes, u64::from_le_bytes),
        DType::Bool => decode(dims, bytes, |[b]: [u8; 1]| b != 0),
    }
}

/// Read the bytes of an external-data tensor, refusing paths outside `model_dir`.
fn read_external(
    t: &TensorProto,
    model_dir: Option<&Path>,
    expected: usize,
) -> Result<Vec<u8>, TensorReadError> {
    let ext = |msg: String| TensorReadError::External(format!("tensor `{}`: {msg}", t.name));
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for kv in &t.external_data {
        match kv.key.as_str() {
            "location" => location = Some(kv.value.clone()),
            "offset" => {
                offset = kv
                    .value
                    .parse()
                    .map_err(|_| ext(format!("bad offset `{}`", kv.value)))?
            }
            "length" => {
                length = Some(
                    kv.value
                        .parse::<u64>()
                        .map_err(|_| ext(format!("bad length `{}`", kv.value)))?,
                )
            }
            _ => {}
        }
    }
    let location = location.ok_or_else(|| ext("no `location` key".into()))?;
    let dir = model_dir.ok_or_else(|| ext("external data needs the model's directory".into()))?;
    let path = safe_join(dir, &location).map_err(ext)?;
    if let Some(len) = length
        && len != expected as u64
    {
        return Err(ext(format!(
            "length {len} does not match the {expected} bytes its dims need"
        )));
    }
    let io = |source| TensorReadError::ExternalIo {
        path: path.clone(),
        source,
    };
    let mut file = File::open(&path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    if offset
        .checked_add(expected as u64)
        .is_none_or(|end| end > file_len)
    {
        return Err(ext(format!(
            "offset {offset} + {expected} bytes runs past the end of {} ({file_len} bytes)",
            path.display()
        )));
    }
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = Vec::new();
    buf.try_reserve_exact(expected)
        .map_err(|e| ext(e.to_string()))?;
    file.take(expected as u64)
        .read_to_end(&mut buf)
        .map_err(io)?;
    Ok(buf)
}

/// Join a relative `location` to `dir`, refusing absolute paths, `..`, and anything that
/// resolves (through symlinks) outside `dir`.
pub fn safe_join(dir: &Path, location: &str) -> Result<PathBuf, String> {
    let rel = Path::new(location);
    if location.is_empty() || location.contains('\0') {
        return Err(format!("invalid location `{location}`"));
    }
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "location `{location}` escapes the model directory (`..`)"
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "location `{location}` is absolute; only paths relative to the model are allowed"
                ));
            }
        }
    }
    let joined = dir.join(rel);
    let base = dir
        .canonicalize()
        .map_err(|e| format!("model directory {}: {e}", dir.display()))?;
    let real = joined
        .canonicalize()
        .map_err(|e| format!("{}: {e}", joined.display()))?;
    if !real.starts_with(&base) {
        return Err(format!(
            "location `{location}` resolves outside the model directory"
        ));
    }
    Ok(real)
}

/// Write an IR tensor as a `TensorProto` with `raw_data` (used to write test data and models),
/// or an error for an element type ONNX has no data type for.
pub fn write_tensor(t: &Tensor, name: &str) -> Result<TensorProto, NoOnnxType> {
    Ok(TensorProto {
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: data_type_of(t.dtype())? as i32,
        name: name.to_string(),
        raw_data: le_bytes_of(t.data()),
        ..Default::default()
    })
}

/// The elements of a buffer as little-endian packed bytes.
fn le_bytes_of(d: &Data) -> Vec<u8> {
    macro_rules! le {
        ($v:expr) => {
            $v.iter().flat_map(|x| x.to_le_bytes()).collect()
        };
    }
    match d {
        Data::F64(v) => le!(v),
        Data::F32(v) => le!(v),
        Data::F16(v) => le!(v),
        Data::BF16(v) => le!(v),
        Data::F8E4M3FN(v) => le!(v),
        Data::F8E4M3FNUZ(v) => le!(v),
        Data::F8E5M2(v) => le!(v),
        Data::F8E5M2FNUZ(v) => le!(v),
        Data::CF8E4M3(v) => le!(v),
        Data::CF8E5M2(v) => le!(v),
        Data::I8(v) => le!(v),
        Data::I16(v) => le!(v),
        Data::I32(v) => le!(v),
        Data::I64(v) => le!(v),
        Data::U8(v) => le!(v),
        Data::U16(v) => le!(v),
        Data::U32(v) => le!(v),
        Data::U64(v) => le!(v),
        Data::Bool(v) => v.iter().map(|&b| b as u8).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_but_cfp8_has_an_onnx_type() {
        for d in DType::ALL {
            match data_type_of(d) {
                Ok(dt) => assert_eq!(dtype_of(dt as i32).unwrap(), d),
                Err(e) => {
                    assert!(matches!(d, DType::CF8E4M3 | DType::CF8E5M2), "{d}");
                    assert_eq!(e, NoOnnxType(d));
                    assert_eq!(
                        e.to_string(),
                        format!("element type {d} has no ONNX data type")
                    );
                }
            }
        }
        let t = Tensor::from_vec(vec![2], vec![CF8E5M2(0x7F), CF8E5M2(0x80)]).unwrap();
        assert_eq!(
            write_tensor(&t, "t").unwrap_err().to_string(),
            "element type cf8e5m2 has no ONNX data type"
        );
        assert!(dtype_of(DataType::Float8e8m0 as i32).is_err());
    }

    #[test]
    fn float8_tensors_are_bytes() {
        // Typed: one byte per int32, negative values standing for the high bytes.
        let t = TensorProto {
            dims: vec![3],
            data_type: DataType::Float8e4m3fn as i32,
            int32_data: vec![0x7E, -1, 0x38],
            ..Default::default()
        };
        let x = read_tensor(&t, None).unwrap();
        assert_eq!(
            x.as_slice::<F8E4M3FN>()
                .map(|v| v.iter().map(|b| b.0).collect::<Vec<_>>()),
            Some(vec![0x7E, 0xFF, 0x38])
        );
        assert_eq!(x.to_f64_vec()[0], 448.0);
        // Raw, and back.
        let t = TensorProto {
            dims: vec![2],
            data_type: DataType::Float8e5m2 as i32,
            raw_data: vec![0x7C, 0x80],
            ..Default::default()
        };
        let x = read_tensor(&t, None).unwrap();
        assert_eq!(x.dtype(), DType::F8E5M2);
        assert_eq!(write_tensor(&x, "x").unwrap().raw_data, vec![0x7C, 0x80]);
        let short = TensorProto {
            dims: vec![3],
            data_type: DataType::Float8e5m2fnuz as i32,
            raw_data: vec![0; 2],
            ..Default::default()
        };
        assert!(matches!(
            read_tensor(&short, None),
            Err(TensorReadError::WrongSize { .. })
        ));
    }
}
