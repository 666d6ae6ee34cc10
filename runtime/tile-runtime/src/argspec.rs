//! Kernel arguments written as text, as `tilec run` and `tile-tune` take them
//! (`x=rand:bf16:4096`, `n=4096`): parsed against a kernel's signature and
//! made into buffers and scalars.
