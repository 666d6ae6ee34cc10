//! A stack of mHC and HC sites with block recompute against the same stack
//! storing every site's input, on the CPU interpreter: the recomputed inputs
//! and h_in, the gradients of the input and of every parameter are
//! bit-identical; the kept activation bytes shrink.

mod common;

#[test]
fn recompute_is_bit_identical_to_storing() {
    common::check_recompute(&common::cpu_kernels());
}
