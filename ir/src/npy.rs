//! Reading and writing numpy `.npy` files.
//!
//! The format (see numpy's `numpy/lib/format.py`) is:
//!
//! ```text
//! b"\x93NUMPY"  major  minor  header length   header                    data
//!   6 bytes     u8     u8     u16 LE (1.0)    Python dict literal,     row-major
//!                             u32 LE (2.0,    padded with spaces and   (or column-major
//!                                     3.0)    ended by '\n'            if fortran_order)
//! ```
//!
//! The header is a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
//! Versions 1.0 and 2.0 encode it in latin-1, 3.0 in UTF-8.
//!
//! # Reading
//!
//! [`read_npy`] and [`read_npy_bytes`] accept versions 1.0, 2.0 and 3.0, with the
//! header dict parsed by a small hand-written parser: tolerant of spacing, key order,
//! quote style, trailing commas and Python 2's `3L` integers, strict on everything
//! else (exactly the three keys, each once; a string `descr`; a bool `fortran_order`;
//! a tuple of non-negative integers as `shape`, where `()` is a scalar and `(5,)` has
//! rank 1). Supported `descr`s, in any byte order (`<`, `>`, or `=` for native; `|`
//! for one-byte types only; big-endian data is byte-swapped):
//!
//! - `f8` `f4` `f2`: f64, f32, f16;
//! - `i1` `i2` `i4` `i8`: i8, i16, i32, i64;
//! - `u1` `u2` `u4` `u8`: u8, u16, u32, u64;
//! - `b1`: bool.
//!
//! Other details:
//!
//! - `fortran_order: True` files are supported: the column-major data is transposed
//!   into terafab's row-major layout on read.
//! - A `b1` byte other than 0 or 1 (numpy itself only writes 0 and 1) reads as `true`:
//!   nonzero is true, as in numpy's own view of such bytes and in `astype(bool)`.
//! - **bf16**: numpy has no bfloat16. `ml_dtypes`' bfloat16 is saved with the descr
//!   `<V2`, which is indistinguishable from any other 2-byte opaque type, so it is
//!   *not* guessed at: it is refused as [`NpyError::UnsupportedDtype`]. Instead,
//!   [`write_npy`] stores bf16 tensors as `<f4` (an exact widening), and they read back
//!   as f32 tensors with the same values.
//! - **float8** (f8e4m3fn, f8e4m3fnuz, f8e5m2, f8e5m2fnuz, and Tesla's CFP8 cf8e4m3,
//!   cf8e5m2): numpy has none either (`ml_dtypes` saves the ONNX ones as opaque `|V1`, refused
//!   like `<V2`, and has no CFP8 type at all); [`write_npy`] stores them as `<f4` like bf16 (every
//!   float8 value is exactly an f32), and they read back as f32.
//!
//! Hostile input is refused with an error, never a panic or an oversized allocation:
//! the header length and the data size are checked against the file before anything
//! is allocated, a shape whose element or byte count overflows gives
//! [`NpyError::ShapeTooLarge`], data shorter than the shape needs gives
//! [`NpyError::Truncated`], and data longer than it gives [`NpyError::TrailingBytes`].
//!
//! # Writing
//!
//! [`write_npy`] and [`npy_bytes`] write version 1.0, or 2.0 when the header does not
//! fit in 1.0's 64 KiB, always little-endian and C-ordered, with the header padded
//! exactly as numpy pads it (spaces, then `'\n'`) so that the data starts at a multiple
//! of 64 bytes. The files load with `numpy.load`.

use std::path::{Path, PathBuf};

use half::{bf16, f16};

use crate::dtype::DType;
use crate::float8::{CF8E4M3, CF8E5M2, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ};
use crate::tensor::{Element, Tensor, TensorError, checked_num_elements, try_filled_vec};
use crate::{with_data, with_dtype};

/// The first six bytes of every `.npy` file.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The data of a written file starts at a multiple of this many bytes (numpy's `ARRAY_ALIGN`).
const ALIGN: usize = 64;

/// Errors reading or writing `.npy` files.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a .npy file: it does not start with b\"\\x93NUMPY\"")]
    BadMagic,
    #[error("unsupported .npy format version {major}.{minor} (supported: 1.0, 2.0, 3.0)")]
    UnsupportedVersion { major: u8, minor: u8 },
    #[error("bad .npy header: {0}")]
    BadHeader(String),
    /// The `descr` is not one terafab reads (the text of the descr, as written).
    #[error(
        "unsupported .npy dtype {0}: expected one of f8 f4 f2 i1 i2 i4 i8 u1 u2 u4 u8 b1 \
         with a byte order (bfloat16 arrays must be saved as float32)"
    )]
    UnsupportedDtype(String),
    /// The element or byte count of the shape (as written in the header) overflows.
    #[error(".npy shape {0} is too large for the address space")]
    ShapeTooLarge(String),
    /// The file ends before the header or the data does (sizes in bytes, whole file).
    #[error("truncated .npy file: expected {expected} bytes, found {actual}")]
    Truncated { expected: usize, actual: usize },
    /// The file holds more data than its shape describes (sizes in bytes, whole file).
    #[error(".npy file has {actual} bytes but its header describes {expected}")]
    TrailingBytes { expected: usize, actual: usize },
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Reads a `.npy` file; see the [module documentation](self) for what is accepted.
pub fn read_npy(path: &Path) -> Result<Tensor, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_npy_bytes(&bytes)
}

/// Reads the contents of a `.npy` file; see the [module documentation](self).
pub fn read_npy_bytes(bytes: &[u8]) -> Result<Tensor, NpyError> {
    let (header, data_start) = read_header(bytes)?;
    let num_elements = checked_num_elements(&header.shape, header.dtype)
        .map_err(|_| NpyError::ShapeTooLarge(shape_repr(&header.shape)))?;
    // Cannot overflow: checked_num_elements bounds the byte count by isize::MAX.
    let expected = data_start.saturating_add(num_elements * header.dtype.size_bytes());
    if bytes.len() < expected {
        return Err(NpyError::Truncated {
            expected,
            actual: bytes.len(),
        });
    }
    if bytes.len() > expected {
        return Err(NpyError::TrailingBytes {
            expected,
            actual: bytes.len(),
        });
    }
    let data = &bytes[data_start..];
    with_dtype!(header.dtype, T => decode::<T>(data, &header))
}

/// Writes `t` as a `.npy` file (version 1.0, or 2.0 for very long headers).
///
/// bf16 and float8 tensors are written as `<f4` (exact widening) and read back as f32.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    std::fs::write(path, npy_bytes(t)).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The bytes of the `.npy` file of `t` (see [`write_npy`]).
///
/// # Panics
///
/// If the header exceeds 4 GiB, which takes a rank above a billion.
pub fn npy_bytes(t: &Tensor) -> Vec<u8> {
    with_data!(t.data(), v, T => encode::<T>(t.shape(), v))
}

/// How an element type is stored in a `.npy` file.
trait NpyElement: Element {
    /// The `descr` without its byte-order character: kind and item size (`"f4"`).
    const CODE: &'static str;
    /// The stored bytes of one element, `[u8; itemsize]`.
    type Raw: Default + AsRef<[u8]> + AsMut<[u8]>;
    fn from_le(raw: Self::Raw) -> Self;
    fn to_le(self) -> Self::Raw;
}

macro_rules! impl_npy_element {
    ($($t:ty => $code:literal, $size:literal;)*) => {$(
        impl NpyElement for $t {
            const CODE: &'static str = $code;
            type Raw = [u8; $size];
            fn from_le(raw: Self::Raw) -> Self {
                <$t>::from_le_bytes(raw)
            }
            fn to_le(self) -> Self::Raw {
                self.to_le_bytes()
            }
        }
    )*};
}
impl_npy_element! {
    f64 => "f8", 8;
    f32 => "f4", 4;
    f16 => "f2", 2;
    i8 => "i1", 1;
    i16 => "i2", 2;
    i32 => "i4", 4;
    i64 => "i8", 8;
    u8 => "u1", 1;
    u16 => "u2", 2;
    u32 => "u4", 4;
    u64 => "u8", 8;
}

impl NpyElement for bool {
    const CODE: &'static str = "b1";
    type Raw = [u8; 1];
    /// Nonzero is true (numpy only writes 0 and 1).
    fn from_le(raw: Self::Raw) -> Self {
        raw[0] != 0
    }
    fn to_le(self) -> Self::Raw {
        [self as u8]
    }
}

/// bf16 is stored as f32: numpy has no bfloat16 type, and the widening is exact.
/// The reader never produces bf16 (an `f4` descr reads as f32); `from_le` is the
/// inverse of `to_le`, exact on what `to_le` writes.
impl NpyElement for bf16 {
    const CODE: &'static str = "f4";
    type Raw = [u8; 4];
    fn from_le(raw: Self::Raw) -> Self {
        bf16::from_f32(f32::from_le_bytes(raw))
    }
    fn to_le(self) -> Self::Raw {
        self.to_f32().to_le_bytes()
    }
}

/// The float8 types are stored as f32 too (numpy has no 8-bit floats; the widening is exact). As
/// for bf16, the reader never produces them, and `from_le` inverts `to_le`.
macro_rules! impl_npy_float8 {
    ($($t:ty),*) => {$(
        impl NpyElement for $t {
            const CODE: &'static str = "f4";
            type Raw = [u8; 4];
            fn from_le(raw: Self::Raw) -> Self {
                <$t>::from_f32(f32::from_le_bytes(raw))
            }
            fn to_le(self) -> Self::Raw {
                self.to_f32().to_le_bytes()
            }
        }
    )*};
}
impl_npy_float8!(F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, CF8E4M3, CF8E5M2);

/// Whether `dtype` is stored as itself (not widened to f32 like bf16 and the float8 types).
fn stored_as_itself(dtype: DType) -> bool {
    code_of(dtype)[1..].parse() == Ok(dtype.size_bytes())
}

/// The `descr` code of a tensor element type (bf16 and the float8 types are stored as `f4`).
fn code_of(dtype: DType) -> &'static str {
    with_dtype!(dtype, T => <T as NpyElement>::CODE)
}

/// The one byte-decoding path: `data` holds exactly the elements of `header`'s shape.
fn decode<T: NpyElement>(data: &[u8], header: &Header) -> Result<Tensor, NpyError> {
    let mut values = try_filled_vec::<T>(&header.shape, T::default())?;
    let mut raw = T::Raw::default();
    for (value, bytes) in values.iter_mut().zip(data.chunks_exact(raw.as_ref().len())) {
        raw.as_mut().copy_from_slice(bytes);
        if header.big_endian {
            raw.as_mut().reverse();
        }
        *value = T::from_le(std::mem::take(&mut raw));
    }
    if header.fortran_order && header.shape.len() > 1 {
        values = fortran_to_c(&values, &header.shape)?;
    }
    Ok(Tensor::from_vec(header.shape.clone(), values)?)
}

/// Reorders column-major `src` of `shape` into row-major order.
fn fortran_to_c<T: Element>(src: &[T], shape: &[usize]) -> Result<Vec<T>, TensorError> {
    let mut out = try_filled_vec(shape, T::default())?;
    // Row-major strides of the output (no overflow: the element count is checked).
    let mut strides = vec![0usize; shape.len()];
    let mut acc = 1;
    for (stride, &dim) in strides.iter_mut().zip(shape).rev() {
        *stride = acc;
        acc *= dim;
    }
    // Walk the source in its order (first axis fastest), tracking the output offset.
    let mut index = vec![0usize; shape.len()];
    let mut offset = 0;
    for &x in src {
        out[offset] = x;
        for ((i, &dim), &stride) in index.iter_mut().zip(shape).zip(&strides) {
            *i += 1;
            offset += stride;
            if *i < dim {
                break;
            }
            *i = 0;
            offset -= stride * dim;
        }
    }
    Ok(out)
}

/// The bytes of a file holding `values` of `shape`.
fn encode<T: NpyElement>(shape: &[usize], values: &[T]) -> Vec<u8> {
    let width = std::mem::size_of::<T::Raw>();
    let order = if width == 1 { '|' } else { '<' };
    let dict = format!(
        "{{'descr': '{order}{}', 'fortran_order': False, 'shape': {}, }}",
        T::CODE,
        shape_repr(shape)
    );
    let mut out = header_bytes(&dict);
    out.reserve_exact(values.len() * width);
    for &v in values {
        out.extend_from_slice(v.to_le().as_ref());
    }
    out
}

/// Magic, version, header length and the padded header, as numpy's `_wrap_header`
/// builds them: 1 to 64 spaces and a `'\n'`, so the data starts at a multiple of 64.
fn header_bytes(dict: &str) -> Vec<u8> {
    let padded_len = |len_bytes: usize| {
        let unpadded = MAGIC.len() + 2 + len_bytes + dict.len() + 1;
        dict.len() + 1 + ALIGN - unpadded % ALIGN
    };
    let (version, len_field) = match u16::try_from(padded_len(2)) {
        Ok(n) => (1, n.to_le_bytes().to_vec()),
        Err(_) => {
            let n = u32::try_from(padded_len(4)).expect(".npy header over 4 GiB");
            (2, n.to_le_bytes().to_vec())
        }
    };
    let header_len = padded_len(len_field.len());
    let mut out = Vec::with_capacity(MAGIC.len() + 2 + len_field.len() + header_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    out.extend_from_slice(&len_field);
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + header_len - dict.len() - 1, b' ');
    out.push(b'\n');
    out
}

/// A shape as Python's `repr` of a tuple writes it: `()`, `(5,)`, `(2, 3)`.
fn shape_repr<D: std::fmt::Display>(dims: &[D]) -> String {
    match dims {
        [d] => format!("({d},)"),
        _ => {
            let items: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
            format!("({})", items.join(", "))
        }
    }
}

/// The validated content of a header.
#[derive(Debug)]
struct Header {
    /// The element type of the file (never bf16).
    dtype: DType,
    big_endian: bool,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses magic, version and header; returns the header and the offset of the data.
fn read_header(bytes: &[u8]) -> Result<(Header, usize), NpyError> {
    let truncated = |expected: usize| NpyError::Truncated {
        expected,
        actual: bytes.len(),
    };
    let available = bytes.len().min(MAGIC.len());
    if bytes[..available] != MAGIC[..available] {
        return Err(NpyError::BadMagic);
    }
    let [major, minor] = *bytes
        .get(MAGIC.len()..MAGIC.len() + 2)
        .and_then(|v| <&[u8; 2]>::try_from(v).ok())
        .ok_or_else(|| truncated(MAGIC.len() + 2))?;
    let (len_bytes, utf8) = match (major, minor) {
        (1, 0) => (2, false),
        (2, 0) => (4, false),
        (3, 0) => (4, true),
        _ => return Err(NpyError::UnsupportedVersion { major, minor }),
    };
    let len_start = MAGIC.len() + 2;
    let header_start = len_start + len_bytes;
    let len_field = bytes
        .get(len_start..header_start)
        .ok_or_else(|| truncated(header_start))?;
    let header_len = len_field
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    let data_start = header_start.saturating_add(header_len);
    let text = bytes
        .get(header_start..data_start)
        .ok_or_else(|| truncated(data_start))?;
    // Latin-1 (1.0, 2.0) maps every byte to a character; only 3.0 can be malformed.
    if utf8 && std::str::from_utf8(text).is_err() {
        return Err(NpyError::BadHeader(
            "version 3.0 header is not UTF-8".into(),
        ));
    }
    Ok((parse_header(text)?, data_start))
}

/// A value of the header dict.
enum Value<'a> {
    Str(&'a [u8]),
    Bool(bool),
    /// The digits of each item of a tuple of non-negative integers.
    Tuple(Vec<&'a [u8]>),
    /// The text of a list (a structured dtype's `descr`), refused by the caller.
    List(&'a [u8]),
}

/// Parses and validates the header dict.
fn parse_header(text: &[u8]) -> Result<Header, NpyError> {
    let mut p = Parser { text, pos: 0 };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    p.skip_ws();
    p.expect(b'{')?;
    loop {
        p.skip_ws();
        if p.eat(b'}') {
            break;
        }
        let key_pos = p.pos;
        let key = p.string()?;
        let slot = match key {
            b"descr" => &mut descr,
            b"fortran_order" => &mut fortran_order,
            b"shape" => &mut shape,
            _ => return p.error_at(key_pos, "unexpected key"),
        };
        p.skip_ws();
        p.expect(b':')?;
        p.skip_ws();
        if slot.replace(p.value()?).is_some() {
            return p.error_at(key_pos, "duplicate key");
        }
        p.skip_ws();
        if !p.eat(b',') {
            p.expect(b'}')?;
            break;
        }
    }
    p.skip_ws();
    if p.pos != text.len() {
        return p.error_at(p.pos, "unexpected text after the dict");
    }
    let missing = |key: &str| NpyError::BadHeader(format!("missing key '{key}'"));
    let (dtype, big_endian) = match descr.ok_or_else(|| missing("descr"))? {
        Value::Str(s) => parse_descr(s)?,
        Value::List(s) => return Err(NpyError::UnsupportedDtype(lossy(s))),
        _ => return Err(NpyError::BadHeader("'descr' is not a string".into())),
    };
    let fortran_order = match fortran_order.ok_or_else(|| missing("fortran_order"))? {
        Value::Bool(b) => b,
        _ => return Err(NpyError::BadHeader("'fortran_order' is not a bool".into())),
    };
    let shape = match shape.ok_or_else(|| missing("shape"))? {
        Value::Tuple(items) => items
            .iter()
            .map(|digits| lossy(digits).parse::<usize>().ok())
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                let items: Vec<String> = items.iter().map(|d| lossy(d)).collect();
                NpyError::ShapeTooLarge(shape_repr(&items))
            })?,
        _ => return Err(NpyError::BadHeader("'shape' is not a tuple".into())),
    };
    Ok(Header {
        dtype,
        big_endian,
        fortran_order,
        shape,
    })
}

/// Maps a descr such as `<f4` to an element type and whether the data is big-endian.
fn parse_descr(descr: &[u8]) -> Result<(DType, bool), NpyError> {
    let unsupported = || NpyError::UnsupportedDtype(lossy(descr));
    let (&order, code) = descr.split_first().ok_or_else(unsupported)?;
    let dtype = DType::ALL
        .into_iter()
        .filter(|&d| stored_as_itself(d))
        .find(|&d| code_of(d).as_bytes() == code)
        .ok_or_else(unsupported)?;
    let big_endian = match order {
        b'<' => false,
        b'>' => true,
        b'=' => cfg!(target_endian = "big"),
        b'|' if dtype.size_bytes() == 1 => false,
        _ => return Err(unsupported()),
    };
    Ok((dtype, big_endian))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A cursor over the header text, for the subset of Python literals numpy writes.
struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn error_at<T>(&self, pos: usize, what: &str) -> Result<T, NpyError> {
        let end = self.text.len().min(pos + 16);
        let near = lossy(self.text.get(pos..end).unwrap_or_default());
        Err(NpyError::BadHeader(format!(
            "{what} at byte {pos} (near {near:?})"
        )))
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        let found = self.peek() == Some(c);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, c: u8) -> Result<(), NpyError> {
        if self.eat(c) {
            Ok(())
        } else {
            self.error_at(self.pos, &format!("expected '{}'", c as char))
        }
    }

    /// Consumes bytes while `f` holds and returns them.
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    /// A quoted string without escapes; returns its content.
    fn string(&mut self) -> Result<&'a [u8], NpyError> {
        let start = self.pos;
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return self.error_at(start, "expected a quoted string"),
        };
        self.pos += 1;
        let content = self.take_while(|c| c != quote && c != b'\\' && c != b'\n');
        if !self.eat(quote) {
            return self.error_at(start, "unterminated or escaped string");
        }
        Ok(content)
    }

    fn value(&mut self) -> Result<Value<'a>, NpyError> {
        let start = self.pos;
        match self.peek() {
            Some(b'\'' | b'"') => Ok(Value::Str(self.string()?)),
            Some(b'(') => Ok(Value::Tuple(self.tuple()?)),
            Some(b'[') => Ok(Value::List(self.list()?)),
            _ => match self.take_while(|c| c.is_ascii_alphanumeric() || c == b'_') {
                b"True" => Ok(Value::Bool(true)),
                b"False" => Ok(Value::Bool(false)),
                _ => self.error_at(start, "expected a string, bool or tuple"),
            },
        }
    }

    /// A tuple of non-negative integers: `()`, `(5,)`, `(2, 3)`, `(2, 3,)`.
    fn tuple(&mut self) -> Result<Vec<&'a [u8]>, NpyError> {
        let start = self.pos;
        self.expect(b'(')?;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b')') {
                return Ok(items);
            }
            items.push(self.int()?);
            self.skip_ws();
            if !self.eat(b',') {
                self.expect(b')')?;
                if items.len() == 1 {
                    // `(5)` is the integer 5 in Python, not a tuple.
                    return self.error_at(start, "parenthesized integer is not a tuple");
                }
                return Ok(items);
            }
        }
    }

    /// A non-negative decimal integer (Python 2's `L` suffix allowed); returns its digits.
    fn int(&mut self) -> Result<&'a [u8], NpyError> {
        let start = self.pos;
        let digits = self.take_while(|c| c.is_ascii_digit());
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return self.error_at(start, "expected a non-negative integer");
        }
        if matches!(self.peek(), Some(b'L' | b'l')) {
            self.pos += 1;
        }
        Ok(digits)
    }

    /// A bracketed list, balanced over brackets outside quoted strings; returns its text.
    fn list(&mut self) -> Result<&'a [u8], NpyError> {
        let start = self.pos;
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            match c {
                b'\'' | b'"' => {
                    self.string()?;
                    continue;
                }
                b'[' | b'(' | b'{' => depth += 1,
                b']' | b')' | b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        self.pos += 1;
                        return Ok(&self.text[start..self.pos]);
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        self.error_at(start, "unterminated list")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A file with `header` verbatim (no padding added) and `data`.
    fn raw_file(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        match version {
            1 => out.extend_from_slice(&(header.len() as u16).to_le_bytes()),
            _ => out.extend_from_slice(&(header.len() as u32).to_le_bytes()),
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn dict(descr: &str, fortran: bool, shape: &str) -> String {
        let f = if fortran { "True" } else { "False" };
        format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}\n")
    }

    /// Checks the layout numpy requires of a written file and returns its data offset.
    fn check_layout(bytes: &[u8]) -> usize {
        assert_eq!(&bytes[..6], MAGIC);
        let (prefix, header_len) = match bytes[6] {
            1 => (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
            2 => (
                12,
                u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            ),
            v => panic!("wrote version {v}"),
        };
        let start = prefix + header_len;
        assert_eq!(bytes[7], 0);
        assert_eq!(start % ALIGN, 0, "data starts at {start}");
        assert_eq!(bytes[start - 1], b'\n');
        assert!(bytes[prefix..start].is_ascii());
        start
    }

    fn round_trip(t: &Tensor) -> Tensor {
        let bytes = npy_bytes(t);
        check_layout(&bytes);
        read_npy_bytes(&bytes).unwrap()
    }

    /// Extreme and ordinary values of each type, through write and read.
    fn round_trip_values<T: Element>(values: Vec<T>) {
        let t = Tensor::from_vec(vec![values.len()], values).unwrap();
        assert_eq!(round_trip(&t), t, "{t:?}");
        let t = t.reshaped(vec![1, t.len(), 1]).unwrap();
        assert_eq!(round_trip(&t), t, "{t:?}");
    }

    #[test]
    fn round_trip_every_dtype() {
        for dtype in DType::ALL {
            let t = Tensor::from_fn(dtype, &[2, 3, 4], |i| (i as f64 - 7.0) * 13.25).unwrap();
            let back = round_trip(&t);
            if !stored_as_itself(dtype) {
                // Stored as '<f4': reads back as f32, with exactly the same values.
                assert_eq!(back.dtype(), DType::F32);
                assert_eq!(back.shape(), t.shape());
                assert_eq!(back.to_f64_vec(), t.to_f64_vec());
            } else {
                assert_eq!(back, t, "{dtype}");
            }
        }
        round_trip_values(vec![
            0.0f64,
            -0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::NEG_INFINITY,
        ]);
        round_trip_values(vec![f64::from_bits(0x7ff8_dead_beef_0001), 1e-310]);
        round_trip_values(vec![f32::NAN, -0.0f32, f32::MAX, 1e-45]);
        round_trip_values(vec![f16::NAN, f16::NEG_ZERO, f16::MAX, f16::from_bits(1)]);
        round_trip_values(vec![i8::MIN, -1, i8::MAX]);
        round_trip_values(vec![i16::MIN, -1, i16::MAX]);
        round_trip_values(vec![i32::MIN, -1, i32::MAX]);
        round_trip_values(vec![i64::MIN, -1, i64::MAX]);
        round_trip_values(vec![0u8, u8::MAX]);
        round_trip_values(vec![0u16, 0x1234, u16::MAX]);
        round_trip_values(vec![0u32, 0x1234_5678, u32::MAX]);
        round_trip_values(vec![0u64, 0x1234_5678_9abc_def0, u64::MAX]);
        round_trip_values(vec![true, false, true]);
    }

    #[test]
    fn bf16_is_written_as_exact_f32() {
        let values = [bf16::NAN, bf16::NEG_ZERO, bf16::MAX, bf16::from_bits(1)];
        let t = Tensor::from_vec(vec![4], values.to_vec()).unwrap();
        let bytes = npy_bytes(&t);
        let start = check_layout(&bytes);
        assert!(bytes[..start].windows(12).any(|w| w == b"'descr': '<f"));
        let back = read_npy_bytes(&bytes).unwrap();
        let back = back.as_slice::<f32>().unwrap();
        for (b, v) in back.iter().zip(values) {
            assert_eq!(b.to_bits(), v.to_f32().to_bits());
        }
    }

    #[test]
    fn cfp8_is_written_as_exact_f32() {
        // Every pattern, -0 (0x80) and ±max included: all finite, no NaN or inf among them.
        let e4 = Tensor::from_vec(vec![256], (0..=255).map(CF8E4M3).collect()).unwrap();
        let e5 = Tensor::from_vec(vec![256], (0..=255).map(CF8E5M2).collect()).unwrap();
        for (t, max) in [(e4, 480.0f32), (e5, 114688.0)] {
            let bytes = npy_bytes(&t);
            let start = check_layout(&bytes);
            assert!(bytes[..start].windows(13).any(|w| w == b"'descr': '<f4"));
            let back = read_npy_bytes(&bytes).unwrap();
            assert_eq!((back.dtype(), back.shape()), (DType::F32, t.shape()));
            let back = back.as_slice::<f32>().unwrap();
            for (b, v) in back.iter().zip(t.to_f64_vec()) {
                assert_eq!(b.to_bits(), (v as f32).to_bits());
            }
            assert_eq!(back[0x80].to_bits(), (-0.0f32).to_bits());
            assert_eq!((back[0x7F], back[0xFF]), (max, -max));
            assert!(back.iter().all(|b| b.is_finite()));
        }
    }

    #[test]
    fn written_header_is_numpys() {
        // np.save of np.arange(6, dtype='<f4').reshape(2, 3) as numpy < 1.23's format.py
        // builds it (1.23 added growth spaces after the dict): 58 spaces of padding,
        // header length 118.
        let t = Tensor::from_vec(vec![2, 3], vec![0.0f32, 1., 2., 3., 4., 5.]).unwrap();
        let bytes = npy_bytes(&t);
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut expected = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        expected.extend_from_slice(dict.as_bytes());
        expected.extend_from_slice(&[b' '; 58]);
        expected.push(b'\n');
        for i in 0..6 {
            expected.extend_from_slice(&(i as f32).to_le_bytes());
        }
        assert_eq!(bytes, expected);
        // One-byte types use '|'; shapes print as Python tuples.
        let t = Tensor::from_vec(vec![3], vec![1u8, 2, 3]).unwrap();
        let bytes = npy_bytes(&t);
        assert!(String::from_utf8_lossy(&bytes).contains("'descr': '|u1'"));
        assert!(String::from_utf8_lossy(&bytes).contains("'shape': (3,), }"));
    }

    #[test]
    fn numpy_fixtures() {
        // What numpy >= 1.23 writes for np.array([[1, 2, 3], [4, 5, 6]], dtype='<i8'):
        // the dict, 20 growth spaces, padding to 128 bytes.
        let dict = "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }";
        let mut header = format!("{dict}{}", " ".repeat(20));
        header.push_str(&" ".repeat(128 - 10 - header.len() - 1));
        header.push('\n');
        let data: Vec<u8> = (1..=6i64).flat_map(|v| v.to_le_bytes()).collect();
        let file = raw_file(1, &header, &data);
        assert_eq!(file.len(), 128 + 48);
        let t = read_npy_bytes(&file).unwrap();
        let expected = Tensor::from_vec(vec![2, 3], (1..=6i64).collect()).unwrap();
        assert_eq!(t, expected);
        // np.save(np.float64(2.5)) (scalar) and np.zeros((0,), '?').
        let f = raw_file(1, &dict_padded("<f8", "()"), &2.5f64.to_le_bytes());
        assert_eq!(read_npy_bytes(&f).unwrap(), Tensor::scalar(2.5f64));
        let f = raw_file(1, &dict_padded("|b1", "(0,)"), &[]);
        let t = read_npy_bytes(&f).unwrap();
        assert_eq!((t.dtype(), t.shape()), (DType::Bool, &[0usize][..]));
    }

    /// A version 1.0 dict padded as numpy pads it.
    fn dict_padded(descr: &str, shape: &str) -> String {
        let d = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        let pad = ALIGN - (10 + d.len() + 1) % ALIGN;
        format!("{d}{}\n", " ".repeat(pad))
    }

    #[test]
    fn scalar_and_empty_shapes() {
        let s = Tensor::scalar(-3i16);
        let back = round_trip(&s);
        assert_eq!(back, s);
        assert_eq!(back.rank(), 0);
        assert!(String::from_utf8_lossy(&npy_bytes(&s)).contains("'shape': (), }"));
        for shape in [&[0][..], &[3, 0, 2], &[0, 1 << 40, 1 << 20]] {
            for dtype in DType::ALL {
                let t = Tensor::zeros(dtype, shape).unwrap();
                let back = round_trip(&t);
                assert_eq!(back.shape(), shape);
                assert!(back.is_empty());
            }
        }
    }

    #[test]
    fn big_endian_files() {
        let data: Vec<u8> = [1i32, -2, 0x0102_0304]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let t = read_npy_bytes(&raw_file(1, &dict(">i4", false, "(3,)"), &data)).unwrap();
        assert_eq!(t.as_slice::<i32>().unwrap(), &[1, -2, 0x0102_0304]);

        let data: Vec<u8> = [1.5f64, -0.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let t = read_npy_bytes(&raw_file(1, &dict(">f8", false, "(2,)"), &data)).unwrap();
        assert_eq!(t, Tensor::from_vec(vec![2], vec![1.5f64, -0.0]).unwrap());

        let data: Vec<u8> = [f16::from_f32(0.5), f16::NEG_INFINITY]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let t = read_npy_bytes(&raw_file(1, &dict(">f2", false, "(2,)"), &data)).unwrap();
        let expected = Tensor::from_vec(vec![2], vec![f16::from_f32(0.5), f16::NEG_INFINITY]);
        assert_eq!(t, expected.unwrap());

        let data = 0xfedc_u16.to_be_bytes();
        let t = read_npy_bytes(&raw_file(1, &dict(">u2", false, "()"), &data)).unwrap();
        assert_eq!(t, Tensor::scalar(0xfedc_u16));

        // One-byte types accept any byte order; '=' is native.
        let t = read_npy_bytes(&raw_file(1, &dict(">i1", false, "(1,)"), &[0xff])).unwrap();
        assert_eq!(t.as_slice::<i8>().unwrap(), &[-1]);
        let native = 7u32.to_ne_bytes();
        let t = read_npy_bytes(&raw_file(1, &dict("=u4", false, "()"), &native)).unwrap();
        assert_eq!(t, Tensor::scalar(7u32));
    }

    #[test]
    fn fortran_order_is_transposed() {
        // [[1, 2, 3], [4, 5, 6]] in column-major order.
        let data: Vec<u8> = [1.0f32, 4., 2., 5., 3., 6.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = read_npy_bytes(&raw_file(1, &dict("<f4", true, "(2, 3)"), &data)).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.as_slice::<f32>().unwrap(), &[1., 2., 3., 4., 5., 6.]);

        // Rank 3, element (i, j, k) = 100i + 10j + k, stored first axis fastest.
        let mut data = Vec::new();
        for k in 0..4u16 {
            for j in 0..3u16 {
                for i in 0..2u16 {
                    data.extend_from_slice(&(100 * i + 10 * j + k).to_be_bytes());
                }
            }
        }
        let t = read_npy_bytes(&raw_file(1, &dict(">u2", true, "(2, 3, 4)"), &data)).unwrap();
        let expected: Vec<u16> = (0..24)
            .map(|n| 100 * (n / 12) + 10 * (n / 4 % 3) + n % 4)
            .collect();
        assert_eq!(t, Tensor::from_vec(vec![2, 3, 4], expected).unwrap());

        // Rank 0 and 1 are the same in both orders; empty arrays stay empty.
        let t = read_npy_bytes(&raw_file(1, &dict("|u1", true, "(3,)"), &[1, 2, 3])).unwrap();
        assert_eq!(t.as_slice::<u8>().unwrap(), &[1, 2, 3]);
        let t = read_npy_bytes(&raw_file(1, &dict("|u1", true, "(3, 0)"), &[])).unwrap();
        assert_eq!(t.shape(), &[3, 0]);
    }

    #[test]
    fn versions_2_and_3() {
        let data = 42i64.to_le_bytes();
        let t = read_npy_bytes(&raw_file(2, &dict("<i8", false, "()"), &data)).unwrap();
        assert_eq!(t, Tensor::scalar(42i64));
        let t = read_npy_bytes(&raw_file(3, &dict("<i8", false, "(1,)"), &data)).unwrap();
        assert_eq!(t.as_slice::<i64>().unwrap(), &[42]);
        // A header over 64 KiB is written as version 2.0.
        let t = Tensor::zeros(DType::U8, &[1; 30_000]).unwrap();
        let bytes = npy_bytes(&t);
        assert_eq!(bytes[6], 2);
        assert_eq!(round_trip(&t), t);
        // Just under the limit, version 1.0.
        let t = Tensor::zeros(DType::U8, &[1; 21_000]).unwrap();
        assert_eq!(npy_bytes(&t)[6], 1);
        assert_eq!(round_trip(&t), t);
    }

    #[test]
    fn header_syntax_is_tolerant_of_spacing_order_and_quotes() {
        let data = [7u8, 8];
        for header in [
            "{'shape': (2,), 'fortran_order': False, 'descr': '|u1'}",
            "{\"descr\":\"|u1\",\"fortran_order\":False,\"shape\":(2,)}\n",
            "  {\n 'descr' : '|u1' ,\t'fortran_order':False,'shape':( 2 , ),\n}  \n",
            "{'descr': '|u1', 'fortran_order': False, 'shape': (2L,), }",
        ] {
            let t = read_npy_bytes(&raw_file(1, header, &data)).unwrap_or_else(|e| {
                panic!("{header:?}: {e}");
            });
            assert_eq!(t.as_slice::<u8>().unwrap(), &data, "{header:?}");
        }
    }

    #[test]
    fn bool_bytes_nonzero_is_true() {
        let t = read_npy_bytes(&raw_file(1, &dict("|b1", false, "(4,)"), &[0, 1, 2, 255]));
        assert_eq!(
            t.unwrap().as_slice::<bool>().unwrap(),
            &[false, true, true, true]
        );
    }

    #[test]
    fn files_on_disk() {
        let dir = std::env::temp_dir().join(format!("terafab-npy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.npy");
        let t = Tensor::from_vec(vec![2, 2], vec![1i32, 2, 3, 4]).unwrap();
        write_npy(&path, &t).unwrap();
        assert_eq!(read_npy(&path).unwrap(), t);
        std::fs::remove_dir_all(&dir).unwrap();
        match read_npy(&path) {
            Err(NpyError::Io { path: p, .. }) => assert_eq!(p, path),
            other => panic!("{other:?}"),
        }
        assert!(matches!(write_npy(&path, &t), Err(NpyError::Io { .. })));
    }

    fn err(bytes: &[u8]) -> NpyError {
        match read_npy_bytes(bytes) {
            Ok(t) => panic!("accepted {t:?}"),
            Err(e) => {
                assert!(!e.to_string().is_empty());
                e
            }
        }
    }

    #[test]
    fn bad_magic_and_version() {
        assert!(matches!(err(b"PK\x03\x04 a zip file"), NpyError::BadMagic));
        assert!(matches!(err(b"\x93NUMPZ\x01\x00"), NpyError::BadMagic));
        assert!(matches!(
            err(b"\x93NUM"),
            NpyError::Truncated {
                expected: 8,
                actual: 4
            }
        ));
        assert!(matches!(err(b""), NpyError::Truncated { .. }));
        let mut f = raw_file(1, &dict("<f4", false, "()"), &[0; 4]);
        f[6] = 4;
        assert!(matches!(
            err(&f),
            NpyError::UnsupportedVersion { major: 4, minor: 0 }
        ));
        f[6] = 1;
        f[7] = 1;
        assert!(matches!(
            err(&f),
            NpyError::UnsupportedVersion { major: 1, minor: 1 }
        ));
    }

    #[test]
    fn truncated_header_and_data() {
        let f = raw_file(1, &dict("<f4", false, "(2,)"), &[0; 8]);
        let header_end = f.len() - 8;
        for len in 6..header_end {
            assert!(matches!(err(&f[..len]), NpyError::Truncated { actual, .. } if actual == len));
        }
        // Header length field pointing far beyond the file.
        let mut g = f.clone();
        g[8..10].copy_from_slice(&0xffffu16.to_le_bytes());
        assert!(matches!(
            err(&g),
            NpyError::Truncated {
                expected: 65545,
                ..
            }
        ));
        let mut g = raw_file(2, &dict("<f4", false, "(2,)"), &[0; 8]);
        g[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(err(&g), NpyError::Truncated { .. }));
        // Data cut short, or too long.
        for len in header_end..f.len() {
            match err(&f[..len]) {
                NpyError::Truncated { expected, actual } => {
                    assert_eq!((expected, actual), (f.len(), len));
                }
                e => panic!("{e:?}"),
            }
        }
        let mut long = f.clone();
        long.push(0);
        assert!(matches!(err(&long), NpyError::TrailingBytes { .. }));
    }

    #[test]
    fn hostile_shapes() {
        let huge = dict("<f4", false, "(1099511627776, 1099511627776)");
        assert!(matches!(
            err(&raw_file(1, &huge, &[0; 16])),
            NpyError::ShapeTooLarge(s) if s == "(1099511627776, 1099511627776)"
        ));
        let over_usize = dict("<f4", false, "(0, 100000000000000000000000000000)");
        assert!(matches!(
            err(&raw_file(1, &over_usize, &[])),
            NpyError::ShapeTooLarge(_)
        ));
        // Fits the address space in elements, but not in bytes.
        let bytes_overflow = dict("<f8", false, &format!("({},)", usize::MAX / 4));
        assert!(matches!(
            err(&raw_file(1, &bytes_overflow, &[])),
            NpyError::ShapeTooLarge(_)
        ));
        // Plausible, but more data than the file holds: refused before allocating.
        let big = dict("<f8", false, "(1000000, 1000000)");
        assert!(matches!(
            err(&raw_file(1, &big, &[0; 64])),
            NpyError::Truncated { .. }
        ));
    }

    #[test]
    fn unsupported_dtypes() {
        for descr in [
            "<c8", "<V2", "|V2", "<f16", "<U3", "|O", "<M8[ns]", "f4", "|f4", "", "<i3",
        ] {
            match err(&raw_file(1, &dict(descr, false, "(1,)"), &[0; 2])) {
                NpyError::UnsupportedDtype(d) => assert_eq!(d, descr),
                e => panic!("{descr}: {e:?}"),
            }
        }
        let structured =
            "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1,), }";
        assert!(matches!(
            err(&raw_file(1, structured, &[0; 8])),
            NpyError::UnsupportedDtype(d) if d == "[('a', '<f4'), ('b', '<i4')]"
        ));
    }

    #[test]
    fn malformed_headers() {
        let bad = [
            "",
            "{}",
            "'descr': '<f4'",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': false, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': Falsey, 'shape': (1,)}",
            "{'descr': 4, 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': 1}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': [1]}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (01,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1 1)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1.0,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x",
            "{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4',, 'fortran_order': False, 'shape': (1,)}",
            "{'descr: '<f4', 'fortran_order': False, 'shape': (1,)}",
            "{'de\\x73cr': '<f4', 'fortran_order': False, 'shape': (1,)}",
            "{descr: '<f4', 'fortran_order': False, 'shape': (1,)}",
            "{'descr': ['<f4', 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}\0",
        ];
        for header in bad {
            match err(&raw_file(1, header, &[0; 4])) {
                NpyError::BadHeader(_) => {}
                e => panic!("{header:?}: {e:?}"),
            }
        }
        // Version 3.0 headers must be UTF-8; 1.0 headers are latin-1 (any byte).
        let mut f = raw_file(3, &dict("<f4", false, "(1,)"), &[0; 4]);
        let quote = f.iter().position(|&b| b == b'<').unwrap();
        f[quote] = 0xff;
        assert!(matches!(err(&f), NpyError::BadHeader(_)));
        let mut g = raw_file(1, &dict("<f4", false, "(1,)"), &[0; 4]);
        let quote = g.iter().position(|&b| b == b'<').unwrap();
        g[quote] = 0xff;
        assert!(matches!(err(&g), NpyError::UnsupportedDtype(_)));
    }

    #[test]
    fn descr_codes_match_element_sizes() {
        for dtype in DType::ALL {
            let code = code_of(dtype);
            let size: usize = code[1..].parse().unwrap();
            let raw = with_dtype!(dtype, T => std::mem::size_of::<<T as NpyElement>::Raw>());
            assert_eq!(size, raw, "{dtype}");
            if stored_as_itself(dtype) {
                assert_eq!(size, dtype.size_bytes(), "{dtype}");
                assert_eq!(
                    parse_descr(format!("<{code}").as_bytes()).unwrap(),
                    (dtype, false)
                );
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = read_npy_bytes(&bytes);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = read_npy_bytes(&with_magic);
        }

        #[test]
        fn mutated_files_never_panic(
            dtype_index in 0..DType::ALL.len(),
            fortran in any::<bool>(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let t = Tensor::from_fn(DType::ALL[dtype_index], &[2, 3], |i| i as f64).unwrap();
            let mut bytes = npy_bytes(&t);
            if fortran {
                let start = bytes.windows(5).position(|w| w == b"False").unwrap();
                bytes.splice(start..start + 5, *b"True ");
            }
            for (at, value) in edits {
                let n = bytes.len();
                bytes[at % n] = value;
            }
            let _ = read_npy_bytes(&bytes);
            let _ = read_npy_bytes(&bytes[..cut % (bytes.len() + 1)]);
        }
    }
}
