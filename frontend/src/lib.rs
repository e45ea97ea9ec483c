//! terafab's frontend: loads a model file into a verified [`Module`].
//!
//! [`load_model`] picks the format from the file extension (see [`SUPPORTED_FORMATS`]):
//!
//! - `.tfir`: the terafab IR text form, parsed with [`terafab_ir::parse::parse_module`].
//! - `.onnx`: an ONNX model (protobuf), imported by [`onnx::import_model`]: every op is
//!   decomposed into core IR ops, and every dim is bound (see [`LoadOptions`]), so the module
//!   has static shapes.
//!
//! Every loaded module has passed [`terafab_ir::verify::verify_module`], so passes, backends
//! and the interpreter may rely on it being well formed.

pub mod onnx;
pub mod ops;

use std::fmt;
use std::path::{Path, PathBuf};

use terafab_ir::Module;
use terafab_ir::parse::ParseError;
use terafab_ir::verify::VerifyError;

/// A model format the frontend reads.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// The file extension, without the dot, matched ASCII case-insensitively.
    pub extension: &'static str,
    pub description: &'static str,
    /// Turn the file's bytes into a module (not yet verified); `path` is for error messages.
    load: fn(&Path, Vec<u8>, &LoadOptions) -> Result<Module, FrontendError>,
}

/// Every format [`load_model`] reads, in the order error messages list them.
pub const SUPPORTED_FORMATS: &[Format] = &[
    Format {
        extension: "onnx",
        description: "ONNX model",
        load: load_onnx,
    },
    Format {
        extension: "onnxtxt",
        description: "ONNX model in ONNX's textual syntax",
        load: load_onnx_text,
    },
    Format {
        extension: "tfir",
        description: "terafab IR text",
        load: parse_tfir,
    },
];

/// How to load a model: the shapes of inputs whose dims the model leaves open (ONNX).
pub type LoadOptions = onnx::ImportOptions;

/// The supported formats as a human-readable list: `.tfir (terafab IR text)`.
pub struct SupportedFormats;

impl fmt::Display for SupportedFormats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, fmt) in SUPPORTED_FORMATS.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, ".{} ({})", fmt.extension, fmt.description)?;
        }
        Ok(())
    }
}

/// Why a model could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("cannot read model file `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is a directory, not a model file", path.display())]
    IsDirectory { path: PathBuf },
    #[error(
        "`{}`: unknown model format{}; supported formats: {SupportedFormats}",
        path.display(),
        extension_note(path)
    )]
    UnknownFormat { path: PathBuf },
    #[error("model file `{}` is not valid UTF-8 text", path.display())]
    NotUtf8 {
        path: PathBuf,
        #[source]
        source: std::string::FromUtf8Error,
    },
    #[error("cannot parse `{}`", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<ParseError>,
    },
    #[error("cannot import ONNX model `{}`", path.display())]
    Onnx {
        path: PathBuf,
        #[source]
        source: Box<onnx::ImportError>,
    },
    #[error("cannot parse ONNX text `{}`", path.display())]
    OnnxText {
        path: PathBuf,
        #[source]
        source: Box<onnx::text::TextError>,
    },
    #[error("`{}` is not a valid terafab module", path.display())]
    Verify {
        path: PathBuf,
        #[source]
        source: Box<VerifyError>,
    },
}

impl FrontendError {
    /// The model file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FrontendError::Io { path, .. }
            | FrontendError::IsDirectory { path }
            | FrontendError::UnknownFormat { path }
            | FrontendError::NotUtf8 { path, .. }
            | FrontendError::Parse { path, .. }
            | FrontendError::Onnx { path, .. }
            | FrontendError::OnnxText { path, .. }
            | FrontendError::Verify { path, .. } => path,
        }
    }
}

fn extension_note(path: &Path) -> String {
    match path.extension() {
        Some(ext) => format!(" (extension `.{}`)", ext.to_string_lossy()),
        None => " (no file extension)".to_string(),
    }
}

/// The supported format of a path, from its extension (ASCII case-insensitive).
pub fn format_of(path: &Path) -> Option<&'static Format> {
    let ext = path.extension()?.to_str()?;
    SUPPORTED_FORMATS
        .iter()
        .find(|f| f.extension.eq_ignore_ascii_case(ext))
}

/// Load a model file into a verified module, picking the format from the file extension.
pub fn load_model(path: &Path) -> Result<Module, FrontendError> {
    load_model_with(path, &LoadOptions::default())
}

/// [`load_model`] with options (input shapes and symbolic dims for ONNX models).
pub fn load_model_with(path: &Path, opts: &LoadOptions) -> Result<Module, FrontendError> {
    let meta = std::fs::metadata(path).map_err(|source| FrontendError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return Err(FrontendError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    let format = format_of(path).ok_or_else(|| FrontendError::UnknownFormat {
        path: path.to_path_buf(),
    })?;
    let bytes = std::fs::read(path).map_err(|source| FrontendError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let module = (format.load)(path, bytes, opts)?;
    terafab_ir::verify::verify_module(&module).map_err(|source| FrontendError::Verify {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok(module)
}

/// Every problem of an ONNX model at once (each unsupported or invalid node), instead of
/// stopping at the first: for `terafab check`. An empty list means the model imports.
pub fn check_onnx(
    path: &Path,
    opts: &LoadOptions,
) -> Result<Vec<onnx::ImportError>, FrontendError> {
    let bytes = std::fs::read(path).map_err(|source| FrontendError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let model = decode_onnx(path, bytes)?;
    Ok(onnx::check_model(&model, Some(&model_dir(path)), opts))
}

/// The directory external data is read from: the model's own.
fn model_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn onnx_error(path: &Path, e: onnx::ImportError) -> FrontendError {
    FrontendError::Onnx {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// An ONNX model from protobuf bytes, or from ONNX's textual syntax for `.onnxtxt` files.
fn decode_onnx(path: &Path, bytes: Vec<u8>) -> Result<onnx::proto::ModelProto, FrontendError> {
    let is_text = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnxtxt"));
    if !is_text {
        return onnx::decode_model(&bytes).map_err(|e| onnx_error(path, e));
    }
    let text = String::from_utf8(bytes).map_err(|source| FrontendError::NotUtf8 {
        path: path.to_path_buf(),
        source,
    })?;
    onnx::text::parse_model_text(&text).map_err(|source| FrontendError::OnnxText {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// Decode and import an ONNX model; external data is read relative to its directory.
fn load_onnx(path: &Path, bytes: Vec<u8>, opts: &LoadOptions) -> Result<Module, FrontendError> {
    let model = decode_onnx(path, bytes)?;
    onnx::import_model(&model, Some(&model_dir(path)), opts).map_err(|e| onnx_error(path, e))
}

/// Parse ONNX text and import it like `.onnx`.
fn load_onnx_text(
    path: &Path,
    bytes: Vec<u8>,
    opts: &LoadOptions,
) -> Result<Module, FrontendError> {
    load_onnx(path, bytes, opts)
}

/// Parse IR text read from `path`.
fn parse_tfir(path: &Path, bytes: Vec<u8>, _opts: &LoadOptions) -> Result<Module, FrontendError> {
    let text = String::from_utf8(bytes).map_err(|source| FrontendError::NotUtf8 {
        path: path.to_path_buf(),
        source,
    })?;
    terafab_ir::parse::parse_module(&text).map_err(|source| FrontendError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}
