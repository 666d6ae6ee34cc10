//! [`Buffer`]: a typed host-memory array that kernels read and write.
//!
//! Every element is an atomic of the element's size (`AtomicU8` for i1,
//! `AtomicU16` for f16/bf16, `AtomicU32` for i32/f32, `AtomicU64` for i64) and
//! is accessed with relaxed loads and stores. That gives the interpreter what a
//! GPU gives a kernel without any `unsafe`: several kernel arguments may alias
//! one buffer, program instances run in parallel, and two instances writing the
//! same element is a race *of the kernel* (one of the values wins) rather than
//! undefined behaviour of the interpreter. `atomic_add` is a true atomic
//! read-modify-write (a compare-and-swap loop on the bits for floats).

use half::{bf16, f16};
use std::fmt;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use tile_ir::Scalar;

pub(crate) enum Storage {
    B8(Box<[AtomicU8]>),
    B16(Box<[AtomicU16]>),
    B32(Box<[AtomicU32]>),
    B64(Box<[AtomicU64]>),
}

/// A typed array in host memory (see the module documentation for aliasing and races).
pub struct Buffer {
    dtype: Scalar,
    pub(crate) storage: Storage,
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer({}[{}])", self.dtype.name(), self.len())
    }
}

impl Clone for Buffer {
    /// A deep copy (a snapshot of the current contents).
    fn clone(&self) -> Buffer {
        Buffer::from_bits(self.dtype, &self.to_bits_u64())
    }
}

/// The bits of every element, widened to u64 (internal, for generic copies).
fn bits_of<A, T: Into<u64>>(v: &[A], load: impl Fn(&A) -> T) -> Vec<u64> {
    v.iter().map(|a| load(a).into()).collect()
}

impl Buffer {
    /// `len` elements of `dtype`, all zero.
    pub fn zeros(dtype: Scalar, len: usize) -> Buffer {
        Self::try_zeros(dtype, len).unwrap_or_else(|| {
            std::alloc::handle_alloc_error(
                std::alloc::Layout::array::<u8>(len.saturating_mul(dtype.size_bytes()))
                    .unwrap_or(std::alloc::Layout::new::<u8>()),
            )
        })
    }

    /// [`Buffer::zeros`], or `None` when the memory cannot be allocated
    /// (the caller reports it instead of the process aborting).
    pub fn try_zeros(dtype: Scalar, len: usize) -> Option<Buffer> {
        fn zeroed<T>(len: usize, zero: impl Fn() -> T) -> Option<Box<[T]>> {
            let mut v = Vec::new();
            v.try_reserve_exact(len).ok()?;
            v.extend((0..len).map(|_| zero()));
            Some(v.into_boxed_slice())
        }
        let storage = match dtype.size_bytes() {
            1 => Storage::B8(zeroed(len, || AtomicU8::new(0))?),
            2 => Storage::B16(zeroed(len, || AtomicU16::new(0))?),
            4 => Storage::B32(zeroed(len, || AtomicU32::new(0))?),
            _ => Storage::B64(zeroed(len, || AtomicU64::new(0))?),
        };
        Some(Buffer { dtype, storage })
    }

    /// From element bits (the low `8 * size_bytes` bits of each u64).
    fn from_bits(dtype: Scalar, bits: &[u64]) -> Buffer {
        let storage = match dtype.size_bytes() {
            1 => Storage::B8(bits.iter().map(|&b| AtomicU8::new(b as u8)).collect()),
            2 => Storage::B16(bits.iter().map(|&b| AtomicU16::new(b as u16)).collect()),
            4 => Storage::B32(bits.iter().map(|&b| AtomicU32::new(b as u32)).collect()),
            _ => Storage::B64(bits.iter().map(|&b| AtomicU64::new(b)).collect()),
        };
        Buffer { dtype, storage }
    }

    fn to_bits_u64(&self) -> Vec<u64> {
        match &self.storage {
            Storage::B8(v) => bits_of(v, |a| a.load(Relaxed)),
            Storage::B16(v) => bits_of(v, |a| a.load(Relaxed)),
            Storage::B32(v) => bits_of(v, |a| a.load(Relaxed)),
            Storage::B64(v) => bits_of(v, |a| a.load(Relaxed)),
        }
    }

    pub fn from_f32(data: &[f32]) -> Buffer {
        Buffer {
            dtype: Scalar::F32,
            storage: Storage::B32(data.iter().map(|x| AtomicU32::new(x.to_bits())).collect()),
        }
    }
    pub fn from_bf16(data: &[bf16]) -> Buffer {
        Buffer {
            dtype: Scalar::BF16,
            storage: Storage::B16(data.iter().map(|x| AtomicU16::new(x.to_bits())).collect()),
        }
    }
    pub fn from_f16(data: &[f16]) -> Buffer {
        Buffer {
            dtype: Scalar::F16,
            storage: Storage::B16(data.iter().map(|x| AtomicU16::new(x.to_bits())).collect()),
        }
    }
    pub fn from_i32(data: &[i32]) -> Buffer {
        Buffer {
            dtype: Scalar::I32,
            storage: Storage::B32(data.iter().map(|&x| AtomicU32::new(x as u32)).collect()),
        }
    }
    pub fn from_i64(data: &[i64]) -> Buffer {
        Buffer {
            dtype: Scalar::I64,
            storage: Storage::B64(data.iter().map(|&x| AtomicU64::new(x as u64)).collect()),
        }
    }
    pub fn from_bool(data: &[bool]) -> Buffer {
        Buffer {
            dtype: Scalar::I1,
            storage: Storage::B8(data.iter().map(|&x| AtomicU8::new(x as u8)).collect()),
        }
    }

    /// `data` converted to `dtype` with the semantics of a TIR cast from f32
    /// (round to nearest even; saturating, NaN → 0 for integers; `!= 0` for i1).
    pub fn from_f32_as(dtype: Scalar, data: &[f32]) -> Buffer {
        match dtype {
            Scalar::F32 => Buffer::from_f32(data),
            Scalar::BF16 => {
                Buffer::from_bf16(&data.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>())
            }
            Scalar::F16 => {
                Buffer::from_f16(&data.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>())
            }
            Scalar::I32 => Buffer::from_i32(&data.iter().map(|&x| x as i32).collect::<Vec<_>>()),
            Scalar::I64 => Buffer::from_i64(&data.iter().map(|&x| x as i64).collect::<Vec<_>>()),
            Scalar::I1 => Buffer::from_bool(&data.iter().map(|&x| x != 0.0).collect::<Vec<_>>()),
        }
    }

    /// From little-endian element bytes; `None` when `bytes.len()` is not a
    /// multiple of the element size.
    pub fn from_bytes(dtype: Scalar, bytes: &[u8]) -> Option<Buffer> {
        let size = dtype.size_bytes();
        if !bytes.chunks_exact(size).remainder().is_empty() {
            return None;
        }
        let bits: Vec<u64> = bytes
            .chunks_exact(size)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..size].copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect();
        Some(Buffer::from_bits(dtype, &bits))
    }

    /// Little-endian element bytes (i1 as one byte, 0 or 1).
    pub fn to_bytes(&self) -> Vec<u8> {
        let size = self.dtype.size_bytes();
        self.to_bits_u64()
            .iter()
            .flat_map(|b| b.to_le_bytes()[..size].to_vec())
            .collect()
    }

    pub fn dtype(&self) -> Scalar {
        self.dtype
    }

    pub fn len(&self) -> usize {
        match &self.storage {
            Storage::B8(v) => v.len(),
            Storage::B16(v) => v.len(),
            Storage::B32(v) => v.len(),
            Storage::B64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> usize {
        self.len() * self.dtype.size_bytes()
    }

    /// Element `i` converted to f64 (exact for every dtype but i64 beyond 2^53).
    pub fn get_f64(&self, i: usize) -> Option<f64> {
        if i >= self.len() {
            return None;
        }
        Some(match &self.storage {
            Storage::B8(v) => v[i].load(Relaxed) as f64,
            Storage::B16(v) => bits16_to_f32(self.dtype, v[i].load(Relaxed)) as f64,
            Storage::B32(v) => {
                let b = v[i].load(Relaxed);
                if self.dtype == Scalar::F32 {
                    f32::from_bits(b) as f64
                } else {
                    b as i32 as f64
                }
            }
            Storage::B64(v) => v[i].load(Relaxed) as i64 as f64,
        })
    }

    /// Every element converted to f32 (i1 → 0/1; i64 rounds beyond 2^24).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.storage {
            Storage::B8(v) => v.iter().map(|a| a.load(Relaxed) as f32).collect(),
            Storage::B16(v) => v
                .iter()
                .map(|a| bits16_to_f32(self.dtype, a.load(Relaxed)))
                .collect(),
            Storage::B32(v) if self.dtype == Scalar::F32 => {
                v.iter().map(|a| f32::from_bits(a.load(Relaxed))).collect()
            }
            Storage::B32(v) => v.iter().map(|a| a.load(Relaxed) as i32 as f32).collect(),
            Storage::B64(v) => v.iter().map(|a| a.load(Relaxed) as i64 as f32).collect(),
        }
    }

    /// Every element converted to f64 (exact except i64 beyond 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.storage {
            Storage::B64(v) => v.iter().map(|a| a.load(Relaxed) as i64 as f64).collect(),
            Storage::B32(v) if self.dtype == Scalar::I32 => {
                v.iter().map(|a| a.load(Relaxed) as i32 as f64).collect()
            }
            _ => self.to_f32_vec().into_iter().map(|x| x as f64).collect(),
        }
    }

    /// Every element converted to bf16 (round to nearest even).
    pub fn to_bf16_vec(&self) -> Vec<bf16> {
        match &self.storage {
            Storage::B16(v) if self.dtype == Scalar::BF16 => {
                v.iter().map(|a| bf16::from_bits(a.load(Relaxed))).collect()
            }
            _ => self.to_f32_vec().into_iter().map(bf16::from_f32).collect(),
        }
    }

    /// Every element converted to f16 (round to nearest even).
    pub fn to_f16_vec(&self) -> Vec<f16> {
        match &self.storage {
            Storage::B16(v) if self.dtype == Scalar::F16 => {
                v.iter().map(|a| f16::from_bits(a.load(Relaxed))).collect()
            }
            _ => self.to_f32_vec().into_iter().map(f16::from_f32).collect(),
        }
    }

    /// Every element converted to i32 (floats truncate, saturating, NaN → 0; i64 wraps).
    pub fn to_i32_vec(&self) -> Vec<i32> {
        match &self.storage {
            Storage::B32(v) if self.dtype == Scalar::I32 => {
                v.iter().map(|a| a.load(Relaxed) as i32).collect()
            }
            Storage::B64(v) => v.iter().map(|a| a.load(Relaxed) as i64 as i32).collect(),
            Storage::B8(v) => v.iter().map(|a| a.load(Relaxed) as i32).collect(),
            _ => self.to_f32_vec().into_iter().map(|x| x as i32).collect(),
        }
    }

    /// Every element converted to i64 (floats truncate, saturating, NaN → 0).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &self.storage {
            Storage::B64(v) => v.iter().map(|a| a.load(Relaxed) as i64).collect(),
            _ if self.dtype.is_int() => self.to_i32_vec().into_iter().map(|x| x as i64).collect(),
            _ => self.to_f32_vec().into_iter().map(|x| x as i64).collect(),
        }
    }

    /// Every element as a boolean (`!= 0`).
    pub fn to_bool_vec(&self) -> Vec<bool> {
        match &self.storage {
            Storage::B8(v) => v.iter().map(|a| a.load(Relaxed) != 0).collect(),
            _ => self.to_f64_vec().into_iter().map(|x| x != 0.0).collect(),
        }
    }

    /// Set every element to `v` converted to the buffer's dtype (as [`Buffer::from_f32_as`]);
    /// e.g. `fill_f32(f32::NAN)` poisons an output buffer.
    pub fn fill_f32(&self, v: f32) {
        let one = Buffer::from_f32_as(self.dtype, &[v]).to_bits_u64()[0];
        match &self.storage {
            Storage::B8(s) => s.iter().for_each(|a| a.store(one as u8, Relaxed)),
            Storage::B16(s) => s.iter().for_each(|a| a.store(one as u16, Relaxed)),
            Storage::B32(s) => s.iter().for_each(|a| a.store(one as u32, Relaxed)),
            Storage::B64(s) => s.iter().for_each(|a| a.store(one, Relaxed)),
        }
    }

    /// Elements `start..start + len` of an f32 buffer, or of a bf16 or f16
    /// one widened to f32 (exactly); `None` for another dtype or a range
    /// past the end.
    pub fn read_f32(&self, start: usize, len: usize) -> Option<Vec<f32>> {
        let range = start..start.checked_add(len)?;
        match &self.storage {
            Storage::B32(v) if self.dtype == Scalar::F32 => v
                .get(range)
                .map(|s| s.iter().map(|a| f32::from_bits(a.load(Relaxed))).collect()),
            Storage::B16(v) => v.get(range).map(|s| {
                s.iter()
                    .map(|a| bits16_to_f32(self.dtype, a.load(Relaxed)))
                    .collect()
            }),
            _ => None,
        }
    }

    /// Overwrite elements `start..start + data.len()` of an f32 buffer with
    /// `data`, or of a bf16/f16 buffer with `data` rounded to nearest even
    /// (as `as bf16` rounds); `false` (nothing written) for another dtype or
    /// a range past the end.
    pub fn write_f32(&self, start: usize, data: &[f32]) -> bool {
        let Some(end) = start.checked_add(data.len()) else {
            return false;
        };
        match &self.storage {
            Storage::B32(v) if self.dtype == Scalar::F32 => match v.get(start..end) {
                Some(s) => {
                    s.iter()
                        .zip(data)
                        .for_each(|(a, x)| a.store(x.to_bits(), Relaxed));
                    true
                }
                None => false,
            },
            Storage::B16(v) => match v.get(start..end) {
                Some(s) => {
                    let round = |x: f32| {
                        if self.dtype == Scalar::BF16 {
                            crate::value::f32_to_bf16(x).to_bits()
                        } else {
                            f16::from_f32(x).to_bits()
                        }
                    };
                    s.iter()
                        .zip(data)
                        .for_each(|(a, &x)| a.store(round(x), Relaxed));
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    /// Overwrite the contents with `other`'s (same dtype and length), or `false`.
    pub fn copy_from(&self, other: &Buffer) -> bool {
        if self.dtype != other.dtype || self.len() != other.len() {
            return false;
        }
        let bits = other.to_bits_u64();
        match &self.storage {
            Storage::B8(s) => s
                .iter()
                .zip(&bits)
                .for_each(|(a, &b)| a.store(b as u8, Relaxed)),
            Storage::B16(s) => s
                .iter()
                .zip(&bits)
                .for_each(|(a, &b)| a.store(b as u16, Relaxed)),
            Storage::B32(s) => s
                .iter()
                .zip(&bits)
                .for_each(|(a, &b)| a.store(b as u32, Relaxed)),
            Storage::B64(s) => s.iter().zip(&bits).for_each(|(a, &b)| a.store(b, Relaxed)),
        }
        true
    }
}

pub(crate) fn bits16_to_f32(dtype: Scalar, b: u16) -> f32 {
    if dtype == Scalar::BF16 {
        bf16::from_bits(b).to_f32()
    } else {
        f16::from_bits(b).to_f32()
    }
}
