//! The one matrix product the kernels call: the gemm crate's f32 GEMM (the
//! one candle's CPU matmul runs), every operand given by its first element
//! and its (row, column) strides in elements, so transposed operands and
//! destinations cost nothing.

/// A matrix in memory: its first element, row stride, column stride.
pub(super) type Strided<P> = (P, usize, usize);

/// `dst (m × n) = beta · lhs (m × k) · rhs (k × n)`, on the calling thread
/// (for kernels whose tasks are the parallelism).
///
/// # Safety
/// Every element the strides reach must be inside its buffer, and `dst`
/// must not overlap `lhs` or `rhs`.
pub(super) unsafe fn product(
    dims: (usize, usize, usize),
    dst: Strided<*mut f32>,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    beta: f32,
) {
    // SAFETY: the caller's contract.
    unsafe { product_into(dims, dst, lhs, rhs, beta, false, 1) }
}

/// `dst (m × n) = [dst +] beta · lhs (m × k) · rhs (k × n)`: added to what
/// `dst` holds when `accumulate`, on `threads` of rayon's pool.
///
/// # Safety
/// As [`product`]; with `accumulate`, `dst` must be initialised.
pub(super) unsafe fn product_into(
    (m, k, n): (usize, usize, usize),
    dst: Strided<*mut f32>,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    beta: f32,
    accumulate: bool,
    threads: usize,
) {
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller's contract; gemm takes the column stride first.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            dst.2 as isize,
            dst.1 as isize,
            accumulate,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            if accumulate { 1.0 } else { 0.0 },
            beta,
            false,
            false,
            false,
            parallelism,
        );
    }
}
