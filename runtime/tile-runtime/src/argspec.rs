//! Kernel arguments written as text, as `tilec run` and `tile-tune` take them
//! (`x=rand:bf16:4096`, `x=rand:bf16:64x4096`, `n=4096`): parsed against a
//! kernel's signature (every parameter given once, dtypes and scalar types
//! checked, errors naming the argument), then made into host buffers (the
//! interpreter's) and uploaded to any [`Device`]. Also the small integer
//! expressions over scalar arguments that `tile-tune --bytes` / `--flops` take.
//!
//! One parser for both tools, so an argument line that runs under `tilec run`
//! tunes under `tile-tune` unchanged, and the random inputs are the same
//! stream (`--seed`) in both.

use crate::{Arg, Buffer, Device};
use anyhow::{anyhow, bail, Context, Result};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use tile_ir::{ParamKind, Scalar, Signature};

/// The `--arg` help text shared by `tilec run` and `tile-tune`.
pub const ARG_HELP: &str = "\
Argument of a kernel parameter, NAME=SPEC. Scalar parameters take a number
(n=4096, eps=1e-5). Pointer parameters take a buffer:
  rand:LEN         uniform in [-1, 1) (integers: [-100, 100), i1: coin flips)
  zeros:LEN        all zero
  nan:LEN          all NaN (poison an output; integers get -1)
  full:LEN:VALUE   all VALUE
  arange:LEN       0, 1, 2, …
  file:PATH        raw little-endian elements of the parameter's dtype
  alias:OTHER      the same buffer as pointer parameter OTHER
LEN is a count (4096) or a shape (64x4096: the product). A dtype may be named
before LEN (rand:bf16:4096); it must be the parameter's.";

/// How a buffer is filled.
#[derive(Clone, Debug, PartialEq)]
pub enum Make {
    Rand,
    Zeros,
    /// NaN for floats, -1 for integers: an output whose every element the
    /// kernel must write.
    Nan,
    Full(f64),
    Arange,
}

/// The value of one parameter, before buffers are made.
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    Scalar(ScalarValue),
    Buffer {
        make: Make,
        len: usize,
    },
    File(PathBuf),
    /// The same buffer as this other pointer parameter.
    Alias(String),
}

/// A scalar argument, typed as its parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScalarValue {
    I32(i32),
    I64(i64),
    F32(f32),
    F16(half::f16),
    BF16(half::bf16),
    Bool(bool),
}

impl ScalarValue {
    /// The value of an integer scalar (what grids, keys and expressions use).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            ScalarValue::I32(v) => Some(v as i64),
            ScalarValue::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The argument for the runtime's launch, which passes i32, i64 and f32
    /// scalars only.
    pub fn to_arg(&self) -> Result<Arg<'static>> {
        Ok(match *self {
            ScalarValue::I32(v) => Arg::I32(v),
            ScalarValue::I64(v) => Arg::I64(v),
            ScalarValue::F32(v) => Arg::F32(v),
            other => bail!("{other:?}: the runtime launches with i32, i64 and f32 scalars only"),
        })
    }

    /// The argument for the interpreter, which takes every scalar type.
    pub fn to_interp_arg(&self) -> tile_interp::Arg<'static> {
        match *self {
            ScalarValue::I32(v) => tile_interp::Arg::I32(v),
            ScalarValue::I64(v) => tile_interp::Arg::I64(v),
            ScalarValue::F32(v) => tile_interp::Arg::F32(v),
            ScalarValue::F16(v) => tile_interp::Arg::F16(v),
            ScalarValue::BF16(v) => tile_interp::Arg::BF16(v),
            ScalarValue::Bool(v) => tile_interp::Arg::Bool(v),
        }
    }
}

/// Every parameter of a kernel with its parsed spec, validated against the
/// signature: each parameter given exactly once, pointer dtypes as declared,
/// scalars parsed as their type, aliases naming a pointer parameter of the
/// same dtype that has a buffer of its own.
#[derive(Clone, Debug)]
pub struct ArgSpecs {
    signature: Signature,
    specs: Vec<Spec>,
    /// The `NAME=SPEC` text of each parameter, for messages and labels.
    texts: Vec<String>,
}

/// `kernel(x: *bf16, n: i32)`: what a message shows of a signature.
pub fn describe_signature(sig: &Signature) -> String {
    let ps: Vec<String> = sig
        .params
        .iter()
        .map(|p| match p.kind {
            ParamKind::Ptr(s) => format!("{}: *{}", p.name, s.name()),
            ParamKind::Scalar(s) => format!("{}: {}", p.name, s.name()),
        })
        .collect();
    format!("{}({})", sig.name, ps.join(", "))
}

impl ArgSpecs {
    /// Parse `NAME=SPEC` strings against `sig`; every parameter must be given.
    pub fn parse(sig: &Signature, args: &[String]) -> Result<ArgSpecs> {
        let mut specs: Vec<Option<(Spec, String)>> = vec![None; sig.params.len()];
        for a in args {
            let (i, spec, text) = parse_one(sig, a)?;
            if specs[i].is_some() {
                bail!("parameter `{}` is given twice", sig.params[i].name);
            }
            specs[i] = Some((spec, text));
        }
        let missing: Vec<String> = sig
            .params
            .iter()
            .zip(&specs)
            .filter(|(_, s)| s.is_none())
            .map(|(p, _)| format!("`{}`", p.name))
            .collect();
        if !missing.is_empty() {
            bail!(
                "missing --arg for {}\n  signature: {}\n  e.g. --arg x=rand:1024 --arg n=1024 (see --help)",
                missing.join(", "),
                describe_signature(sig)
            );
        }
        let (specs, texts) = specs.into_iter().map(Option::unwrap).unzip();
        let a = ArgSpecs {
            signature: sig.clone(),
            specs,
            texts,
        };
        a.check_aliases()?;
        Ok(a)
    }

    /// These specs with some replaced (`tile-tune --check-arg`: the reduced
    /// problem names only what differs from the full one).
    pub fn with_replaced(&self, args: &[String]) -> Result<ArgSpecs> {
        let mut out = self.clone();
        let mut seen = vec![false; self.specs.len()];
        for a in args {
            let (i, spec, text) = parse_one(&self.signature, a)?;
            if std::mem::replace(&mut seen[i], true) {
                bail!(
                    "parameter `{}` is given twice",
                    self.signature.params[i].name
                );
            }
            out.specs[i] = spec;
            out.texts[i] = text;
        }
        out.check_aliases()?;
        Ok(out)
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    pub fn specs(&self) -> &[Spec] {
        &self.specs
    }

    /// The parameter index of `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.signature.params.iter().position(|p| p.name == name)
    }

    /// The value of scalar parameter `name`.
    pub fn scalar(&self, name: &str) -> Option<ScalarValue> {
        match self.specs.get(self.index(name)?)? {
            Spec::Scalar(v) => Some(*v),
            _ => None,
        }
    }

    /// `x=rand:bf16:64x4096 n=4096`: the arguments as given.
    pub fn label(&self) -> String {
        self.texts.join(" ")
    }

    /// The outputs: the pointer parameters named in `explicit`, or, when it is
    /// empty, those whose spec is `nan:` (a poisoned buffer is one the kernel
    /// is expected to overwrite). Indices of parameters, in signature order.
    pub fn outputs(&self, explicit: &[String]) -> Result<Vec<usize>> {
        if explicit.is_empty() {
            let outs: Vec<usize> = (0..self.specs.len())
                .filter(|&i| {
                    matches!(
                        self.specs[i],
                        Spec::Buffer {
                            make: Make::Nan,
                            ..
                        }
                    )
                })
                .collect();
            if outs.is_empty() {
                bail!(
                    "kernel `{}`: no output to check: poison each output with nan:LEN (e.g. --arg y=nan:4096) or name them with --out",
                    self.signature.name
                );
            }
            return Ok(outs);
        }
        let mut outs = Vec::new();
        for name in explicit {
            let i = self.index(name).ok_or_else(|| {
                anyhow!(
                    "--out {name}: kernel `{}` has no parameter `{name}`\n  signature: {}",
                    self.signature.name,
                    describe_signature(&self.signature)
                )
            })?;
            match self.specs[i] {
                Spec::Buffer { .. } | Spec::File(_) => {}
                Spec::Alias(_) => bail!(
                    "--out {name}: `{name}` is an alias; name the parameter that owns the buffer"
                ),
                Spec::Scalar(_) => bail!("--out {name}: `{name}` is a scalar, not a buffer"),
            }
            if !outs.contains(&i) {
                outs.push(i);
            }
        }
        outs.sort_unstable();
        Ok(outs)
    }

    /// Elements of every buffer (aliases counted once); files by their size.
    pub fn buffer_elements(&self) -> Result<u64> {
        let mut n = 0u64;
        for (p, s) in self.signature.params.iter().zip(&self.specs) {
            n += match (s, p.kind) {
                (Spec::Buffer { len, .. }, _) => *len as u64,
                (Spec::File(path), ParamKind::Ptr(d)) => {
                    std::fs::metadata(path)
                        .with_context(|| format!("cannot read {}", path.display()))?
                        .len()
                        / d.size_bytes() as u64
                }
                _ => 0,
            };
        }
        Ok(n)
    }

    /// Bytes of every buffer (aliases counted once): what a kernel that reads
    /// each input once and writes each output once moves.
    pub fn buffer_bytes(&self) -> Result<u64> {
        let mut n = 0u64;
        for (p, s) in self.signature.params.iter().zip(&self.specs) {
            if let (ParamKind::Ptr(d), Spec::Buffer { len, .. }) = (p.kind, s) {
                n += (*len * d.size_bytes()) as u64;
            } else if let (ParamKind::Ptr(_), Spec::File(path)) = (p.kind, s) {
                n += std::fs::metadata(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .len();
            }
        }
        Ok(n)
    }

    /// Evaluate an expression over the integer and float scalar arguments
    /// (`2*rows*cols*2`), as `tile-tune --bytes` takes it.
    pub fn eval(&self, expr: &str) -> Result<f64> {
        let names: Vec<&str> = self
            .signature
            .params
            .iter()
            .filter(|p| matches!(p.kind, ParamKind::Scalar(_)))
            .map(|p| p.name.as_str())
            .collect();
        eval_expr(expr, &|name| {
            self.scalar(name).map(|v| match v {
                ScalarValue::I32(x) => x as f64,
                ScalarValue::I64(x) => x as f64,
                ScalarValue::F32(x) => x as f64,
                ScalarValue::F16(x) => x.to_f64(),
                ScalarValue::BF16(x) => x.to_f64(),
                ScalarValue::Bool(x) => x as u8 as f64,
            })
        })
        .map_err(|e| {
            anyhow!(
                "`{expr}`: {e} (scalar arguments: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )
        })
    }

    fn check_aliases(&self) -> Result<()> {
        let params = &self.signature.params;
        for (p, s) in params.iter().zip(&self.specs) {
            let Spec::Alias(other) = s else { continue };
            let target = self
                .index(other)
                .filter(|&j| matches!(self.specs[j], Spec::Buffer { .. } | Spec::File(_)));
            let Some(j) = target else {
                bail!(
                    "`{}=alias:{other}`: `{other}` is not a pointer parameter with its own buffer",
                    p.name
                );
            };
            if params[j].kind != p.kind {
                bail!(
                    "`{}=alias:{other}`: the two parameters point to different dtypes",
                    p.name
                );
            }
        }
        Ok(())
    }

    /// Make the buffers on the host (pointer parameters in order, from one
    /// random stream seeded with `seed`) and the scalars.
    pub fn make_host(&self, seed: u64) -> Result<HostArgs> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let params = &self.signature.params;
        let mut buffers = Vec::new();
        let mut buf_of = vec![None; params.len()];
        let mut scalars = vec![None; params.len()];
        for (i, (p, s)) in params.iter().zip(&self.specs).enumerate() {
            let dtype = match p.kind {
                ParamKind::Ptr(d) => d,
                ParamKind::Scalar(_) => {
                    if let Spec::Scalar(v) = s {
                        scalars[i] = Some(*v);
                    }
                    continue;
                }
            };
            let b = match s {
                Spec::Buffer { make, len } => make_buffer(make, dtype, *len, &mut rng),
                Spec::File(path) => {
                    let bytes = std::fs::read(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    tile_interp::Buffer::from_bytes(dtype, &bytes).ok_or_else(|| {
                        anyhow!(
                            "{}: {} bytes is not a whole number of {} elements",
                            path.display(),
                            bytes.len(),
                            dtype.name()
                        )
                    })?
                }
                Spec::Alias(_) | Spec::Scalar(_) => continue,
            };
            buf_of[i] = Some(buffers.len());
            buffers.push(b);
        }
        for (i, s) in self.specs.iter().enumerate() {
            if let Spec::Alias(other) = s {
                buf_of[i] = self.index(other).and_then(|j| buf_of[j]);
            }
        }
        Ok(HostArgs {
            buffers,
            buf_of,
            scalars,
        })
    }
}

/// One `NAME=SPEC`: the parameter's index, its spec and the text.
fn parse_one(sig: &Signature, a: &str) -> Result<(usize, Spec, String)> {
    let (name, spec) = a
        .split_once('=')
        .ok_or_else(|| anyhow!("`--arg {a}` is not NAME=SPEC\n{ARG_HELP}"))?;
    let (name, spec) = (name.trim(), spec.trim());
    let i = sig
        .params
        .iter()
        .position(|p| p.name == name)
        .ok_or_else(|| {
            anyhow!(
                "kernel `{}` has no parameter `{name}`\n  signature: {}",
                sig.name,
                describe_signature(sig)
            )
        })?;
    Ok((
        i,
        parse_spec(name, spec, sig.params[i].kind)?,
        format!("{name}={spec}"),
    ))
}

/// A length: a count (`4096`) or a shape whose product it is (`64x4096`).
fn parse_len(s: &str) -> Option<usize> {
    s.split('x')
        .map(|d| d.trim().parse::<usize>().ok())
        .try_fold(1usize, |acc, d| acc.checked_mul(d?))
}

fn parse_spec(name: &str, spec: &str, kind: ParamKind) -> Result<Spec> {
    let dtype = match kind {
        ParamKind::Scalar(t) => return Ok(Spec::Scalar(parse_scalar(name, spec, t)?)),
        ParamKind::Ptr(d) => d,
    };
    let mut parts: Vec<&str> = spec.split(':').collect();
    let kind = parts.remove(0);
    match kind {
        "file" => {
            return Ok(Spec::File(PathBuf::from(
                &spec["file:".len().min(spec.len())..],
            )))
        }
        "alias" => {
            let other = parts
                .first()
                .ok_or_else(|| anyhow!("`{name}={spec}`: alias:OTHER needs a parameter name"))?;
            return Ok(Spec::Alias(other.to_string()));
        }
        "rand" | "zeros" | "nan" | "full" | "arange" => {}
        _ => bail!(
            "`{name}={spec}`: parameter `{name}` is a pointer (*{}), and `{spec}` is not a buffer spec\n{ARG_HELP}",
            dtype.name()
        ),
    }
    if let Some(d) = parts.first().and_then(|p| Scalar::from_name(p)) {
        if d != dtype {
            bail!(
                "`{name}={spec}`: parameter `{name}` points to {}, not {}",
                dtype.name(),
                d.name()
            );
        }
        parts.remove(0);
    }
    let len_s = parts
        .first()
        .ok_or_else(|| anyhow!("`{name}={spec}`: missing the length (e.g. {kind}:4096)"))?;
    let len = parse_len(len_s).ok_or_else(|| {
        anyhow!("`{name}={spec}`: `{len_s}` is not a length (a count like 4096 or a shape like 64x4096)")
    })?;
    let make = match (kind, parts.len()) {
        ("rand", 1) => Make::Rand,
        ("zeros", 1) => Make::Zeros,
        ("nan", 1) => Make::Nan,
        ("arange", 1) => Make::Arange,
        ("full", 2) => Make::Full(
            parts[1]
                .parse()
                .map_err(|_| anyhow!("`{name}={spec}`: `{}` is not a number", parts[1]))?,
        ),
        _ => bail!("`{name}={spec}` is not a buffer spec\n{ARG_HELP}"),
    };
    Ok(Spec::Buffer { make, len })
}

fn parse_scalar(name: &str, s: &str, ty: Scalar) -> Result<ScalarValue> {
    let bad = || {
        anyhow!(
            "`{name}={s}`: parameter `{name}` is {}, and `{s}` is not one",
            ty.name()
        )
    };
    Ok(match ty {
        Scalar::I32 => ScalarValue::I32(s.parse().map_err(|_| bad())?),
        Scalar::I64 => ScalarValue::I64(s.parse().map_err(|_| bad())?),
        Scalar::F32 => ScalarValue::F32(s.parse().map_err(|_| bad())?),
        Scalar::F16 => ScalarValue::F16(half::f16::from_f64(s.parse().map_err(|_| bad())?)),
        Scalar::BF16 => ScalarValue::BF16(half::bf16::from_f64(s.parse().map_err(|_| bad())?)),
        Scalar::I1 => ScalarValue::Bool(match s {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(bad()),
        }),
    })
}

fn make_buffer(make: &Make, dtype: Scalar, len: usize, rng: &mut impl Rng) -> tile_interp::Buffer {
    use tile_interp::Buffer as B;
    match (make, dtype) {
        (Make::Arange, Scalar::I64) => return B::from_i64(&(0..len as i64).collect::<Vec<_>>()),
        (Make::Arange, Scalar::I32) => return B::from_i32(&(0..len as i32).collect::<Vec<_>>()),
        _ => {}
    }
    let vals: Vec<f32> = match make {
        Make::Rand if dtype.is_float() => {
            (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
        }
        Make::Rand if dtype == Scalar::I1 => {
            (0..len).map(|_| rng.random_range(0..2) as f32).collect()
        }
        Make::Rand => (0..len)
            .map(|_| rng.random_range(-100..100) as f32)
            .collect(),
        Make::Zeros => vec![0.0; len],
        Make::Nan => vec![if dtype.is_float() { f32::NAN } else { -1.0 }; len],
        Make::Full(v) => vec![*v as f32; len],
        Make::Arange => (0..len).map(|i| i as f32).collect(),
    };
    B::from_f32_as(dtype, &vals)
}

/// Arguments made on the host: the interpreter's buffers and the scalars.
pub struct HostArgs {
    pub buffers: Vec<tile_interp::Buffer>,
    /// Per parameter, the index of its buffer (aliases share one).
    pub buf_of: Vec<Option<usize>>,
    /// Per parameter, its value if it is a scalar.
    pub scalars: Vec<Option<ScalarValue>>,
}

impl HostArgs {
    /// The interpreter's launch arguments, in parameter order.
    pub fn interp_args(&self) -> Vec<tile_interp::Arg<'_>> {
        self.buf_of
            .iter()
            .zip(&self.scalars)
            .map(|(b, s)| match (b, s) {
                (Some(b), _) => tile_interp::Arg::Buffer(&self.buffers[*b]),
                (None, Some(v)) => v.to_interp_arg(),
                (None, None) => unreachable!("ArgSpecs gives every parameter a value"),
            })
            .collect()
    }
}

/// Arguments on a device, made from [`HostArgs`], which can be restored to
/// their initial contents (before each check launch).
pub struct DeviceArgs {
    buffers: Vec<Buffer>,
    buf_of: Vec<Option<usize>>,
    scalars: Vec<Option<Arg<'static>>>,
}

impl DeviceArgs {
    /// Upload every buffer; an error for a scalar the runtime cannot pass.
    pub fn upload(dev: &Device, host: &HostArgs, sig: &Signature) -> Result<DeviceArgs> {
        let mut scalars = Vec::new();
        for (p, s) in sig.params.iter().zip(&host.scalars) {
            scalars.push(match s {
                Some(v) => Some(
                    v.to_arg()
                        .with_context(|| format!("parameter `{}`", p.name))?,
                ),
                None => None,
            });
        }
        let buffers = host
            .buffers
            .iter()
            .map(|b| dev.upload_bytes(b.dtype(), &b.to_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DeviceArgs {
            buffers,
            buf_of: host.buf_of.clone(),
            scalars,
        })
    }

    /// The launch arguments, in parameter order.
    pub fn args(&self) -> Vec<Arg<'_>> {
        self.buf_of
            .iter()
            .zip(&self.scalars)
            .map(|(b, s)| match (b, s) {
                (Some(b), _) => Arg::Buffer(&self.buffers[*b]),
                (None, Some(Arg::I32(v))) => Arg::I32(*v),
                (None, Some(Arg::I64(v))) => Arg::I64(*v),
                (None, Some(Arg::F32(v))) => Arg::F32(*v),
                _ => unreachable!("upload gives every parameter a value"),
            })
            .collect()
    }

    /// The buffer of parameter `param`.
    pub fn buffer(&self, param: usize) -> Option<&Buffer> {
        Some(&self.buffers[(*self.buf_of.get(param)?)?])
    }

    /// Write every buffer back to its contents in `host`.
    pub fn restore(&mut self, dev: &Device, host: &HostArgs) -> Result<()> {
        for (d, h) in self.buffers.iter_mut().zip(&host.buffers) {
            dev.write(d, &h.to_bytes())?;
        }
        Ok(())
    }
}

/// Evaluate `+ - * /`, unary `-`, `cdiv(a, b)`, parentheses, numbers and
/// names (looked up with `value`) in f64, so products of large sizes do not
/// overflow (the grammar of [`tile_ir::expr`]).
pub fn eval_expr(expr: &str, value: &dyn Fn(&str) -> Option<f64>) -> Result<f64, String> {
    tile_ir::expr::parse_expr(expr, &Evaluate { value })
}

/// [`eval_expr`]'s pieces: each one's value.
struct Evaluate<'a> {
    value: &'a dyn Fn(&str) -> Option<f64>,
}

impl tile_ir::expr::ExprBuilder for Evaluate<'_> {
    type Out = f64;

    fn number(&self, text: &str) -> Result<f64, String> {
        text.parse()
            .map_err(|_| format!("`{text}` is not a number"))
    }

    fn name(&self, name: &str) -> Result<f64, String> {
        (self.value)(name).ok_or_else(|| format!("`{name}` is not a scalar argument"))
    }

    fn neg(&self, a: f64) -> Result<f64, String> {
        Ok(-a)
    }

    fn binary(&self, op: char, a: f64, b: f64) -> Result<f64, String> {
        Ok(match op {
            '+' => a + b,
            '-' => a - b,
            '*' => a * b,
            _ => a / b,
        })
    }

    fn cdiv(&self, a: f64, b: f64) -> Result<f64, String> {
        Ok((a / b).ceil())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tile_ir::SigParam;

    fn sig() -> Signature {
        let p = |name: &str, kind| SigParam {
            name: name.into(),
            kind,
        };
        Signature {
            name: "k".into(),
            params: vec![
                p("x", ParamKind::Ptr(Scalar::BF16)),
                p("y", ParamKind::Ptr(Scalar::BF16)),
                p("rows", ParamKind::Scalar(Scalar::I32)),
                p("eps", ParamKind::Scalar(Scalar::F32)),
            ],
        }
    }

    fn parse(args: &[&str]) -> Result<ArgSpecs> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        ArgSpecs::parse(&sig(), &args)
    }

    fn err(args: &[&str]) -> String {
        format!("{:#}", parse(args).unwrap_err())
    }

    #[test]
    fn shapes_are_products_and_outputs_are_the_poisoned_buffers() {
        let a = parse(&["x=rand:bf16:64x1000", "y=nan:64000", "rows=64", "eps=1e-5"]).unwrap();
        assert_eq!(
            a.specs()[0],
            Spec::Buffer {
                make: Make::Rand,
                len: 64000
            }
        );
        assert_eq!(a.outputs(&[]).unwrap(), vec![1]);
        assert_eq!(a.outputs(&["x".into()]).unwrap(), vec![0]);
        assert_eq!(a.buffer_bytes().unwrap(), 2 * 2 * 64000);
        assert_eq!(a.eval("2*rows*(1000+0)*2").unwrap(), 256000.0);
        let h = a.make_host(0).unwrap();
        assert_eq!(h.buffers.len(), 2);
        assert!(h.buffers[1].to_f64_vec().iter().all(|v| v.is_nan()));
        // The reduced problem replaces only what it names.
        let c = a
            .with_replaced(&["x=rand:bf16:4x1000".into(), "rows=4".into()])
            .unwrap();
        assert_eq!(c.scalar("rows"), Some(ScalarValue::I32(4)));
        assert_eq!(c.scalar("eps"), a.scalar("eps"));
        assert_eq!(c.label(), "x=rand:bf16:4x1000 y=nan:64000 rows=4 eps=1e-5");
    }

    #[test]
    fn bad_arguments_name_the_argument() {
        let ok = ["y=nan:16", "rows=1", "eps=0"];
        let with = |first: &str| {
            let mut v = vec![first];
            v.extend(ok);
            err(&v)
        };
        assert!(with("x=rand:f32:16")
            .contains("`x=rand:f32:16`: parameter `x` points to bf16, not f32"));
        assert!(with("x=rand:bf16:16xq").contains("`16xq` is not a length"));
        assert!(with("x=rand").contains("missing the length"));
        assert!(with("x=4096").contains("is a pointer (*bf16), and `4096` is not a buffer spec"));
        assert!(with("z=rand:16").contains("kernel `k` has no parameter `z`"));
        assert!(with("x=alias:rows").contains("not a pointer parameter with its own buffer"));
        assert!(err(&["x=rand:16", "y=nan:16", "rows=1.5", "eps=0"])
            .contains("parameter `rows` is i32, and `1.5` is not one"));
        assert!(err(&["x=rand:16"]).contains("missing --arg for `y`, `rows`, `eps`"));
        assert!(err(&["x=rand:16", "x=rand:16"]).contains("`x` is given twice"));
        let a = parse(&["x=rand:16", "y=zeros:16", "rows=1", "eps=0"]).unwrap();
        assert!(format!("{:#}", a.outputs(&[]).unwrap_err()).contains("no output to check"));
        assert!(format!("{:#}", a.outputs(&["rows".into()]).unwrap_err()).contains("is a scalar"));
        assert!(format!("{:#}", a.eval("2*cols").unwrap_err())
            .contains("`cols` is not a scalar argument (scalar arguments: rows, eps)"));
    }

    #[test]
    fn expressions() {
        let v = |s: &str| eval_expr(s, &|n| (n == "n").then_some(10.0));
        assert_eq!(v("1 + 2 * 3"), Ok(7.0));
        assert_eq!(v("(1 + 2) * n / 4"), Ok(7.5));
        assert_eq!(v("-n - -1"), Ok(-9.0));
        assert!(v("2 *").is_err());
        assert!(v("(2").is_err());
        assert!(v("2 $ 3").is_err());
        assert!(v("").is_err());
    }
}
