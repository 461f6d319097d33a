//! What every CUDA kernel of ours needs (the `cuda` feature): a module of
//! PTX loaded once per device, contiguous views of a storage's data,
//! fresh outputs, launch shapes.
//!
//! The kernels themselves are the device halves of the fused ops, beside
//! their CPU halves: [`crate::kernels`] here, `ijepa_train`'s optimizer
//! kernels there. Each crate's `build.rs` compiles its `.cu` files to PTX
//! with the toolkit candle's own kernels are built with.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use candle_core::cuda_backend::CudaDType;
use candle_core::{CudaDevice, CudaStorage, Layout, Result, Tensor};

pub use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
pub use candle_core::cuda_backend::WrapErr;

/// 0: not read yet; 1: on; 2: off.
static KERNELS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Whether our CUDA kernels are used: yes unless `IJEPA_KERNELS=composed`
/// (read once) or [`set_enabled`] said otherwise — so the compositions
/// they replace can be timed and compared on the same build.
pub fn enabled() -> bool {
    use std::sync::atomic::Ordering;
    match KERNELS.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = std::env::var("IJEPA_KERNELS").map_or(true, |v| v != "composed");
            KERNELS.store(if on { 1 } else { 2 }, Ordering::Relaxed);
            on
        }
    }
}

/// Turns our CUDA kernels on or off for the forwards and backwards that
/// start afterwards (the parity bench's reference is the composition).
pub fn set_enabled(on: bool) {
    KERNELS.store(if on { 1 } else { 2 }, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `t` is on a CUDA device with our kernels enabled.
pub fn eligible(t: &Tensor) -> bool {
    t.device().is_cuda() && enabled()
}

/// A PTX module: its name (the key it is loaded under, once per device) and
/// its code.
#[derive(Debug, Clone, Copy)]
pub struct Ptx {
    /// The module's name.
    pub module: &'static str,
    /// The PTX text.
    pub code: &'static str,
}

/// Launches kernel `$name` of module `$ptx` (a [`Ptx`]) on CUDA device
/// `$dev` with launch shape `$cfg` and the arguments after the `;` (each a
/// reference: a view, a slice, a scalar); evaluates to a
/// `candle_core::Result<()>`.
///
/// Safety is the caller's: the kernel's signature must match the
/// arguments, and every pointer must span what the kernel touches.
#[macro_export]
macro_rules! cuda_launch {
    ($dev:expr, $ptx:expr, $name:expr, $cfg:expr; $($arg:expr),* $(,)?) => {
        $crate::cuda_launch!(@bind [$dev, $ptx, $name, $cfg] [] $($arg,)*)
    };
    // Each argument is bound first, so temporaries live until the launch.
    (@bind $head:tt [$($bound:ident)*] $first:expr, $($rest:expr,)*) => {{
        let arg = $first;
        $crate::cuda_launch!(@bind $head [$($bound)* arg] $($rest,)*)
    }};
    (@bind [$dev:expr, $ptx:expr, $name:expr, $cfg:expr] [$($bound:ident)*]) => {{
        #[allow(unused_imports)]
        use $crate::cuda::{PushKernelArg as _, WrapErr as _};
        let ptx: &$crate::cuda::Ptx = $ptx;
        let cfg: $crate::cuda::LaunchConfig = $cfg;
        match $dev.get_or_load_custom_func($name, ptx.module, ptx.code) {
            Ok(f) => {
                let mut b = f.builder();
                $( b.arg($bound); )*
                // SAFETY: the caller's (see the macro's documentation).
                unsafe { b.launch(cfg) }.w().map(|_| ())
            }
            Err(e) => Err(e),
        }
    }};
}

/// The contiguous data of a storage as a view of `T`.
///
/// # Errors
/// Another dtype, or a layout that is not contiguous.
pub fn view<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, T>> {
    let (start, end) = l.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::Msg("CUDA kernel: the input is not contiguous".into())
    })?;
    Ok(s.as_cuda_slice::<T>()?.slice(start..end))
}

/// The contiguous data of a storage as a view of `T` a kernel writes (an
/// in-place op's destination).
///
/// # Errors
/// Another dtype, or a layout that is not contiguous.
pub fn view_mut<'a, T: CudaDType>(
    s: &'a mut CudaStorage,
    l: &Layout,
) -> Result<CudaViewMut<'a, T>> {
    let (start, end) = l.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::Msg("CUDA kernel: the input is not contiguous".into())
    })?;
    Ok(s.as_cuda_slice_mut::<T>()?.slice_mut(start..end))
}

/// The CUDA storage of `t` and its layout, for a kernel that reads it
/// (and, for a tensor made for the purpose, writes it).
///
/// # Errors
/// `t` is not on a CUDA device.
pub fn storage_of(t: &Tensor) -> Result<(candle_core::StorageRef<'_>, Layout)> {
    let (guard, layout) = t.storage_and_layout();
    if !matches!(&*guard, candle_core::Storage::Cuda(_)) {
        candle_core::bail!(
            "CUDA kernel: a tensor of shape {:?} is not on a GPU",
            t.dims()
        );
    }
    Ok((guard, layout.clone()))
}

/// The CUDA storage inside a guard from [`storage_of`].
pub fn cuda_storage(s: &candle_core::Storage) -> Result<&CudaStorage> {
    match s {
        candle_core::Storage::Cuda(c) => Ok(c),
        _ => candle_core::bail!("CUDA kernel: a tensor is not on a GPU"),
    }
}

/// `n` uninitialised values on `dev`, for a kernel to write every one of.
///
/// # Errors
/// Out of device memory.
pub fn output<T: DeviceRepr>(dev: &CudaDevice, n: usize) -> Result<CudaSlice<T>> {
    // SAFETY: every caller launches a kernel that writes all `n` values
    // before the slice is read.
    unsafe { dev.alloc::<T>(n.max(1)) }
}

/// A storage holding `slice`.
pub fn storage<T: CudaDType>(slice: CudaSlice<T>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(slice, dev.clone())
}

/// One warp per row, 8 rows a block.
pub fn rows(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(8).max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A grid-stride loop over `n` elements.
pub fn elements(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 132 * 32) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}
