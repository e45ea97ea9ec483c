//! The CUDA driver API, loaded at run time from `libcuda.so.1` (the build needs no CUDA).
//!
//! Only what the executable needs: a context on device 0, modules from PTX, device memory,
//! copies, launches and synchronization. Every `CUresult` is checked and becomes a
//! [`DriverError::Call`] naming the function and the driver's description of the code.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::sync::Arc;

use libloading::Library;

/// Why a driver operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    /// No usable GPU: the driver library is missing, or it finds no device.
    #[error("no GPU: {0}")]
    NoDevice(String),
    /// A driver call returned an error.
    #[error("CUDA {func} failed: {message} (CUresult {code})")]
    Call {
        func: &'static str,
        code: i32,
        message: String,
    },
}

type CuResult = c_int;
pub type DevicePtr = u64;
type Handle = *mut c_void;

/// `CU_DEVICE_ATTRIBUTE_*` numbers used here.
pub mod attr {
    pub const MULTIPROCESSOR_COUNT: i32 = 16;
    pub const MEMORY_CLOCK_RATE_KHZ: i32 = 36;
    pub const GLOBAL_MEMORY_BUS_WIDTH_BITS: i32 = 37;
    pub const COMPUTE_CAPABILITY_MAJOR: i32 = 75;
    pub const COMPUTE_CAPABILITY_MINOR: i32 = 76;
}

const CUDA_ERROR_NO_DEVICE: i32 = 100;

struct Api {
    // Keeps the function pointers below valid.
    _lib: Library,
    get_error_string: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult,
    init: unsafe extern "C" fn(c_uint) -> CuResult,
    device_get_count: unsafe extern "C" fn(*mut c_int) -> CuResult,
    device_get: unsafe extern "C" fn(*mut c_int, c_int) -> CuResult,
    device_get_name: unsafe extern "C" fn(*mut c_char, c_int, c_int) -> CuResult,
    device_get_attribute: unsafe extern "C" fn(*mut c_int, c_int, c_int) -> CuResult,
    ctx_create: unsafe extern "C" fn(*mut Handle, c_uint, c_int) -> CuResult,
    ctx_destroy: unsafe extern "C" fn(Handle) -> CuResult,
    ctx_set_current: unsafe extern "C" fn(Handle) -> CuResult,
    ctx_synchronize: unsafe extern "C" fn() -> CuResult,
    module_load_data_ex: unsafe extern "C" fn(
        *mut Handle,
        *const c_void,
        c_uint,
        *mut c_int,
        *mut *mut c_void,
    ) -> CuResult,
    module_unload: unsafe extern "C" fn(Handle) -> CuResult,
    module_get_function: unsafe extern "C" fn(*mut Handle, Handle, *const c_char) -> CuResult,
    mem_alloc: unsafe extern "C" fn(*mut DevicePtr, usize) -> CuResult,
    mem_free: unsafe extern "C" fn(DevicePtr) -> CuResult,
    memcpy_htod: unsafe extern "C" fn(DevicePtr, *const c_void, usize) -> CuResult,
    memcpy_dtoh: unsafe extern "C" fn(*mut c_void, DevicePtr, usize) -> CuResult,
    #[allow(clippy::type_complexity)]
    launch_kernel: unsafe extern "C" fn(
        Handle,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        Handle,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> CuResult,
}

/// A symbol of `lib` as a function pointer of type `T`.
///
/// # Safety
/// `T` must be the symbol's true C signature.
unsafe fn sym<T: Copy>(lib: &Library, name: &str) -> Result<T, DriverError> {
    let cname = format!("{name}\0");
    // SAFETY: the caller's promise.
    unsafe { lib.get::<T>(cname.as_bytes()) }
        .map(|s| *s)
        .map_err(|e| DriverError::NoDevice(format!("the CUDA driver has no {name}: {e}")))
}

impl Api {
    fn load() -> Result<Api, DriverError> {
        let names = ["libcuda.so.1", "libcuda.so"];
        let mut last = String::new();
        let mut lib = None;
        for n in names {
            // SAFETY: loading the CUDA driver runs its initializers, which are sound.
            match unsafe { Library::new(n) } {
                Ok(l) => {
                    lib = Some(l);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let lib = lib.ok_or_else(|| {
            DriverError::NoDevice(format!("no CUDA driver (libcuda.so.1) found: {last}"))
        })?;
        // SAFETY: each type is the driver API's documented signature of the symbol.
        unsafe {
            Ok(Api {
                get_error_string: sym(&lib, "cuGetErrorString")?,
                init: sym(&lib, "cuInit")?,
                device_get_count: sym(&lib, "cuDeviceGetCount")?,
                device_get: sym(&lib, "cuDeviceGet")?,
                device_get_name: sym(&lib, "cuDeviceGetName")?,
                device_get_attribute: sym(&lib, "cuDeviceGetAttribute")?,
                ctx_create: sym(&lib, "cuCtxCreate_v2")?,
                ctx_destroy: sym(&lib, "cuCtxDestroy_v2")?,
                ctx_set_current: sym(&lib, "cuCtxSetCurrent")?,
                ctx_synchronize: sym(&lib, "cuCtxSynchronize")?,
                module_load_data_ex: sym(&lib, "cuModuleLoadDataEx")?,
                module_unload: sym(&lib, "cuModuleUnload")?,
                module_get_function: sym(&lib, "cuModuleGetFunction")?,
                mem_alloc: sym(&lib, "cuMemAlloc_v2")?,
                mem_free: sym(&lib, "cuMemFree_v2")?,
                memcpy_htod: sym(&lib, "cuMemcpyHtoD_v2")?,
                memcpy_dtoh: sym(&lib, "cuMemcpyDtoH_v2")?,
                launch_kernel: sym(&lib, "cuLaunchKernel")?,
                _lib: lib,
            })
        }
    }

    /// `Ok` for `CUDA_SUCCESS`, else the error with the driver's message.
    fn check(&self, func: &'static str, code: CuResult) -> Result<(), DriverError> {
        if code == 0 {
            return Ok(());
        }
        let mut msg: *const c_char = std::ptr::null();
        // SAFETY: the out pointer is valid; the driver returns a static string or null.
        let message = unsafe {
            if (self.get_error_string)(code, &mut msg) == 0 && !msg.is_null() {
                CStr::from_ptr(msg).to_string_lossy().into_owned()
            } else {
                "unknown error".to_string()
            }
        };
        Err(DriverError::Call {
            func,
            code,
            message,
        })
    }
}

/// A CUDA context on device 0: the one handle for memory, modules and launches.
pub struct Device {
    api: Api,
    ctx: Handle,
    /// The device's name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Compute capability.
    pub capability: (i32, i32),
    dev: c_int,
}

// SAFETY: the context handle is usable from any thread once made current there, which every
// method does first (`enter`).
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

impl Device {
    /// Load the driver, initialize it and create a context on device 0.
    pub fn open() -> Result<Arc<Device>, DriverError> {
        let api = Api::load()?;
        // SAFETY: plain driver calls with valid out pointers.
        unsafe {
            let r = (api.init)(0);
            if r == CUDA_ERROR_NO_DEVICE {
                return Err(DriverError::NoDevice(
                    "the CUDA driver finds no GPU (cuInit: no CUDA-capable device)".into(),
                ));
            }
            api.check("cuInit", r)?;
            let mut count = 0;
            api.check("cuDeviceGetCount", (api.device_get_count)(&mut count))?;
            if count == 0 {
                return Err(DriverError::NoDevice("the CUDA driver finds no GPU".into()));
            }
            let mut dev = 0;
            api.check("cuDeviceGet", (api.device_get)(&mut dev, 0))?;
            let mut name = [0 as c_char; 256];
            api.check(
                "cuDeviceGetName",
                (api.device_get_name)(name.as_mut_ptr(), 256, dev),
            )?;
            let name = CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
            let mut ctx = std::ptr::null_mut();
            api.check("cuCtxCreate_v2", (api.ctx_create)(&mut ctx, 0, dev))?;
            let mut d = Device {
                api,
                ctx,
                name,
                capability: (0, 0),
                dev,
            };
            d.capability = (
                d.attribute(attr::COMPUTE_CAPABILITY_MAJOR)?,
                d.attribute(attr::COMPUTE_CAPABILITY_MINOR)?,
            );
            Ok(Arc::new(d))
        }
    }

    /// Make the context current on this thread.
    fn enter(&self) -> Result<(), DriverError> {
        // SAFETY: the context is alive while `self` is.
        self.api.check("cuCtxSetCurrent", unsafe {
            (self.api.ctx_set_current)(self.ctx)
        })
    }

    /// A `CU_DEVICE_ATTRIBUTE_*` value (see [`attr`]).
    pub fn attribute(&self, which: i32) -> Result<i32, DriverError> {
        let mut v = 0;
        // SAFETY: valid out pointer and device.
        self.api.check("cuDeviceGetAttribute", unsafe {
            (self.api.device_get_attribute)(&mut v, which, self.dev)
        })?;
        Ok(v)
    }

    /// The theoretical memory bandwidth in bytes per second (clock x bus width x 2 for DDR).
    pub fn peak_bandwidth(&self) -> Result<f64, DriverError> {
        let khz = self.attribute(attr::MEMORY_CLOCK_RATE_KHZ)? as f64;
        let bits = self.attribute(attr::GLOBAL_MEMORY_BUS_WIDTH_BITS)? as f64;
        Ok(2.0 * khz * 1e3 * bits / 8.0)
    }

    /// Wait for all launched work.
    pub fn synchronize(&self) -> Result<(), DriverError> {
        self.enter()?;
        // SAFETY: plain driver call.
        self.api
            .check("cuCtxSynchronize", unsafe { (self.api.ctx_synchronize)() })
    }

    /// `bytes` of device memory (at least one byte is allocated).
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<DeviceBuffer, DriverError> {
        self.enter()?;
        let mut ptr = 0;
        // SAFETY: valid out pointer.
        self.api.check("cuMemAlloc_v2", unsafe {
            (self.api.mem_alloc)(&mut ptr, bytes.max(1))
        })?;
        Ok(DeviceBuffer {
            dev: self.clone(),
            ptr,
            bytes,
        })
    }

    /// A module from PTX text (JIT-compiled by the driver for this device).
    pub fn load_module(self: &Arc<Self>, ptx: &str) -> Result<DeviceModule, DriverError> {
        self.enter()?;
        let text = CString::new(ptx).map_err(|_| DriverError::Call {
            func: "cuModuleLoadDataEx",
            code: -1,
            message: "PTX text contains a NUL byte".into(),
        })?;
        let mut m = std::ptr::null_mut();
        // SAFETY: a NUL-terminated image and no options.
        self.api.check("cuModuleLoadDataEx", unsafe {
            (self.api.module_load_data_ex)(
                &mut m,
                text.as_ptr() as *const c_void,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        })?;
        Ok(DeviceModule {
            dev: self.clone(),
            module: m,
        })
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: the context was created by `open`; nothing uses it after this.
        unsafe { (self.api.ctx_destroy)(self.ctx) };
    }
}

/// Device memory, freed on drop.
pub struct DeviceBuffer {
    dev: Arc<Device>,
    pub ptr: DevicePtr,
    pub bytes: usize,
}

impl DeviceBuffer {
    /// Copy `data` to the start of the buffer.
    pub fn upload(&self, data: &[u8]) -> Result<(), DriverError> {
        if data.len() > self.bytes {
            return Err(DriverError::Call {
                func: "cuMemcpyHtoD_v2",
                code: -1,
                message: format!("{} bytes into a buffer of {}", data.len(), self.bytes),
            });
        }
        if data.is_empty() {
            return Ok(());
        }
        self.dev.enter()?;
        // SAFETY: `data.len()` bytes fit the allocation.
        self.dev.api.check("cuMemcpyHtoD_v2", unsafe {
            (self.dev.api.memcpy_htod)(self.ptr, data.as_ptr() as *const c_void, data.len())
        })
    }

    /// Copy the start of the buffer into `out`.
    pub fn download(&self, out: &mut [u8]) -> Result<(), DriverError> {
        if out.len() > self.bytes {
            return Err(DriverError::Call {
                func: "cuMemcpyDtoH_v2",
                code: -1,
                message: format!("{} bytes from a buffer of {}", out.len(), self.bytes),
            });
        }
        if out.is_empty() {
            return Ok(());
        }
        self.dev.enter()?;
        // SAFETY: `out.len()` bytes lie within the allocation.
        self.dev.api.check("cuMemcpyDtoH_v2", unsafe {
            (self.dev.api.memcpy_dtoh)(out.as_mut_ptr() as *mut c_void, self.ptr, out.len())
        })
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.dev.enter().is_ok() {
            // SAFETY: allocated by `alloc`, freed once.
            unsafe { (self.dev.api.mem_free)(self.ptr) };
        }
    }
}

/// A loaded module, unloaded on drop.
pub struct DeviceModule {
    dev: Arc<Device>,
    module: Handle,
}

// SAFETY: as for `Device`: every use makes the context current first.
unsafe impl Send for DeviceModule {}
unsafe impl Sync for DeviceModule {}

/// A kernel of a loaded module (valid while its module is).
#[derive(Clone, Copy)]
pub struct Kernel(Handle);

// SAFETY: a function handle is an immutable driver object.
unsafe impl Send for Kernel {}
unsafe impl Sync for Kernel {}

impl DeviceModule {
    pub fn function(&self, name: &str) -> Result<Kernel, DriverError> {
        self.dev.enter()?;
        let cname = CString::new(name).map_err(|_| DriverError::Call {
            func: "cuModuleGetFunction",
            code: -1,
            message: format!("kernel name {name:?} contains a NUL byte"),
        })?;
        let mut f = std::ptr::null_mut();
        // SAFETY: valid module and NUL-terminated name.
        self.dev.api.check("cuModuleGetFunction", unsafe {
            (self.dev.api.module_get_function)(&mut f, self.module, cname.as_ptr())
        })?;
        Ok(Kernel(f))
    }

    /// Launch `kernel` on `grid` blocks of `block` threads with pointer arguments `args`
    /// (asynchronous: [`Device::synchronize`] waits).
    pub fn launch(
        &self,
        kernel: Kernel,
        grid: u32,
        block: u32,
        args: &[DevicePtr],
    ) -> Result<(), DriverError> {
        self.dev.enter()?;
        let mut vals: Vec<DevicePtr> = args.to_vec();
        let mut params: Vec<*mut c_void> = vals
            .iter_mut()
            .map(|v| v as *mut DevicePtr as *mut c_void)
            .collect();
        // SAFETY: one pointer to an 8-byte device pointer per kernel parameter, as the
        // kernel was generated with; default stream, no shared memory beyond the static.
        self.dev.api.check("cuLaunchKernel", unsafe {
            (self.dev.api.launch_kernel)(
                kernel.0,
                grid,
                1,
                1,
                block,
                1,
                1,
                0,
                std::ptr::null_mut(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        })
    }
}

impl Drop for DeviceModule {
    fn drop(&mut self) {
        if self.dev.enter().is_ok() {
            // SAFETY: loaded by `load_module`, unloaded once.
            unsafe { (self.dev.api.module_unload)(self.module) };
        }
    }
}
