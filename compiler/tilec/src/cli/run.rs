//! `tilec run`: run one kernel specialisation on the CPU interpreter with given
//! or generated inputs, and summarise every buffer afterwards.
//!
//! ```text
//! tilec run dsl-examples/vector_add.tile --kernel vector_add -D BLOCK=1024 --grid 4 \
//!     --arg a=rand:4096 --arg b=rand:4096 --arg c=nan:4096 --arg n=4096
//! ```
//!
//! An out-of-bounds access (or any other run-time error) is reported against the
//! source with file:line:col, the line and a caret, the program id and the
//! offending element index, and the command exits with status 1.

use super::{parse_define, Define};

use anyhow::{anyhow, bail, Context, Result};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::process::ExitCode;
use tile_interp::{self as interp, Arg, Buffer};
use tile_ir::{Elem, Kernel, Scalar};

const ARG_HELP: &str = "\
Argument of a kernel parameter, NAME=SPEC. Scalar parameters take a number
(n=4096, eps=1e-5). Pointer parameters take a buffer:
  rand:LEN         uniform in [-1, 1) (integers: [-100, 100), i1: coin flips)
  zeros:LEN        all zero
  nan:LEN          all NaN (poison an output; integers get -1)
  full:LEN:VALUE   all VALUE
  arange:LEN       0, 1, 2, …
  file:PATH        raw little-endian elements of the parameter's dtype
  alias:OTHER      the same buffer as pointer parameter OTHER
A dtype may be named before LEN (rand:bf16:4096); it must be the parameter's.";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The .tile source file.
    pub file: PathBuf,
    /// Kernel to run (default: the file's only or first kernel).
    #[arg(long)]
    pub kernel: Option<String>,
    /// Meta-parameter value, e.g. -D BLOCK=1024 (default: the declaration's
    /// default, else the first value of the tune block).
    #[arg(short = 'D', value_parser = parse_define)]
    pub defines: Vec<Define>,
    /// Launch grid X[,Y[,Z]].
    #[arg(long, default_value = "1", value_parser = parse_launch_grid)]
    pub grid: [u32; 3],
    #[arg(long = "arg", value_name = "NAME=SPEC", long_help = ARG_HELP)]
    pub args: Vec<String>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Elements shown per buffer.
    #[arg(long, default_value_t = 8)]
    pub show: usize,
    /// Write a buffer's final contents (raw little-endian) to a file: NAME=PATH.
    #[arg(long = "save", value_name = "NAME=PATH")]
    pub save: Vec<String>,
    /// Run program instances one after another instead of in parallel.
    #[arg(long)]
    pub sequential: bool,
    /// Debug: run only program X,Y,Z and print every value it defines.
    #[arg(long, value_name = "X[,Y[,Z]]", value_parser = parse_pid)]
    pub trace: Option<[u32; 3]>,
}

/// A program id X[,Y[,Z]] (missing axes are 0).
fn parse_pid(s: &str) -> Result<[u32; 3], String> {
    let g = parse_grid(s)?;
    let n = s.split(',').count();
    Ok([
        g[0],
        if n > 1 { g[1] } else { 0 },
        if n > 2 { g[2] } else { 0 },
    ])
}

/// A launch grid X[,Y[,Z]] (missing axes are 1) within CUDA's limits: every
/// axis at least 1, X at most 2^31 - 1, Y and Z at most 65535.
fn parse_launch_grid(s: &str) -> Result<[u32; 3], String> {
    let g = parse_grid(s)?;
    for (i, (&n, max)) in g.iter().zip([i32::MAX as u32, 65535, 65535]).enumerate() {
        let axis = ["x", "y", "z"][i];
        if n == 0 {
            return Err(format!(
                "grid {axis} is 0: a launch needs at least one program per axis (hint: `--grid 1`, or skip the launch when there is no work)"
            ));
        }
        if n > max {
            return Err(format!(
                "grid {axis} = {n} is beyond CUDA's limit of {max} programs on that axis (hint: put the large dimension on x, which allows up to 2^31 - 1, or loop over it inside the kernel)"
            ));
        }
    }
    Ok(g)
}

fn parse_grid(s: &str) -> Result<[u32; 3], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.is_empty() || parts.len() > 3 {
        return Err(format!("`{s}` is not X[,Y[,Z]]"));
    }
    let mut g = [1u32; 3];
    for (i, p) in parts.iter().enumerate() {
        g[i] = p
            .parse()
            .map_err(|_| format!("`{p}` in `{s}` is not a non-negative integer"))?;
    }
    Ok(g)
}

/// The value of one parameter, before buffers are created.
enum Spec {
    Scalar(String),
    Buffer { make: Make, len: usize },
    File(PathBuf),
    Alias(String),
}

enum Make {
    Rand,
    Zeros,
    Nan,
    Full(f64),
    Arange,
}

fn parse_spec(name: &str, spec: &str, param_ty: Elem) -> Result<Spec> {
    let Elem::Ptr(dtype) = param_ty else {
        return Ok(Spec::Scalar(spec.to_string()));
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
        _ => {}
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
    let len: usize = len_s
        .parse()
        .map_err(|_| anyhow!("`{name}={spec}`: `{len_s}` is not a length"))?;
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

fn make_buffer(make: &Make, dtype: Scalar, len: usize, rng: &mut impl Rng) -> Buffer {
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
    if let (Make::Arange, Scalar::I64) = (make, dtype) {
        return Buffer::from_i64(&(0..len as i64).collect::<Vec<_>>());
    }
    if let (Make::Arange, Scalar::I32) = (make, dtype) {
        return Buffer::from_i32(&(0..len as i32).collect::<Vec<_>>());
    }
    Buffer::from_f32_as(dtype, &vals)
}

fn scalar_arg(name: &str, s: &str, ty: Scalar) -> Result<Arg<'static>> {
    let bad = || {
        anyhow!(
            "`{name}={s}`: parameter `{name}` is {}, and `{s}` is not one",
            ty.name()
        )
    };
    Ok(match ty {
        Scalar::I32 => Arg::I32(s.parse().map_err(|_| bad())?),
        Scalar::I64 => Arg::I64(s.parse().map_err(|_| bad())?),
        Scalar::F32 => Arg::F32(s.parse().map_err(|_| bad())?),
        Scalar::F16 => Arg::F16(half::f16::from_f64(s.parse().map_err(|_| bad())?)),
        Scalar::BF16 => Arg::BF16(half::bf16::from_f64(s.parse().map_err(|_| bad())?)),
        Scalar::I1 => Arg::Bool(match s {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(bad()),
        }),
    })
}

fn signature(k: &Kernel) -> String {
    let ps: Vec<String> = k
        .params
        .iter()
        .map(|p| format!("{}: {}", p.name, p.ty))
        .collect();
    format!("{}({})", k.name, ps.join(", "))
}

/// One-line summary of a buffer: first elements, min/max/mean, NaN count.
fn summarize(b: &Buffer, show: usize) -> String {
    let v = b.to_f64_vec();
    let int = b.dtype().is_int();
    let fmt = |x: f64| {
        if int {
            format!("{}", x as i64)
        } else {
            format!("{x:.6}")
        }
    };
    let first: Vec<String> = v.iter().take(show).map(|&x| fmt(x)).collect();
    let mut s = format!(
        "[{}{}]",
        first.join(", "),
        if v.len() > show { ", …" } else { "" }
    );
    let nan = v.iter().filter(|x| x.is_nan()).count();
    let fin: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if !fin.is_empty() {
        let min = fin.iter().copied().fold(f64::INFINITY, f64::min);
        let max = fin.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = fin.iter().sum::<f64>() / fin.len() as f64;
        s += &format!("  min {}  max {}  mean {mean:.6}", fmt(min), fmt(max));
    }
    s += &format!("  NaN {nan}");
    s
}

pub fn main(args: Args) -> Result<ExitCode> {
    let (src, kernel, _config) = match super::build::specialize_from_cli(
        &args.file,
        args.kernel.as_deref(),
        &args.defines,
        None,
    )? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };

    // Parameter values.
    let mut specs: Vec<Option<Spec>> = kernel.params.iter().map(|_| None).collect();
    for a in &args.args {
        let (name, spec) = a
            .split_once('=')
            .ok_or_else(|| anyhow!("`--arg {a}` is not NAME=SPEC\n{ARG_HELP}"))?;
        let (name, spec) = (name.trim(), spec.trim());
        let i = kernel
            .params
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| {
                anyhow!(
                    "kernel `{}` has no parameter `{name}`\n  signature: {}",
                    kernel.name,
                    signature(&kernel)
                )
            })?;
        if specs[i].is_some() {
            bail!("parameter `{name}` is given twice");
        }
        specs[i] = Some(parse_spec(name, spec, kernel.params[i].ty.elem)?);
    }
    let missing: Vec<&str> = kernel
        .params
        .iter()
        .zip(&specs)
        .filter(|(_, s)| s.is_none())
        .map(|(p, _)| p.name.as_str())
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing --arg for {}\n  signature: {}\n  e.g. --arg x=rand:1024 --arg n=1024 (see `tilec run --help`)",
            missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
            signature(&kernel)
        );
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    // Buffers: owned ones first, then aliases resolved to their index.
    let mut buffers: Vec<Option<Buffer>> = Vec::new();
    let mut buf_of: Vec<Option<usize>> = vec![None; kernel.params.len()];
    for (i, (p, s)) in kernel.params.iter().zip(&specs).enumerate() {
        let Elem::Ptr(dtype) = p.ty.elem else {
            continue;
        };
        let b = match s.as_ref().unwrap() {
            Spec::Buffer { make, len } => make_buffer(make, dtype, *len, &mut rng),
            Spec::File(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Buffer::from_bytes(dtype, &bytes).ok_or_else(|| {
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
        buffers.push(Some(b));
    }
    for (i, (p, s)) in kernel.params.iter().zip(&specs).enumerate() {
        if let Some(Spec::Alias(other)) = s {
            let j = kernel.params.iter().position(|q| q.name == *other);
            let target = j.and_then(|j| buf_of[j]);
            let Some(t) = target else {
                bail!(
                    "`{}=alias:{other}`: `{other}` is not a pointer parameter with its own buffer",
                    p.name
                );
            };
            if buffers[t].as_ref().unwrap().dtype() != elem_scalar(p.ty.elem) {
                bail!(
                    "`{}=alias:{other}`: the two parameters point to different dtypes",
                    p.name
                );
            }
            buf_of[i] = Some(t);
        }
    }
    let buffers: Vec<Buffer> = buffers.into_iter().map(Option::unwrap).collect();
    let before: Vec<Vec<u8>> = buffers.iter().map(Buffer::to_bytes).collect();
    let mut call: Vec<Arg> = Vec::new();
    for (i, (p, s)) in kernel.params.iter().zip(&specs).enumerate() {
        call.push(match (p.ty.elem, s.as_ref().unwrap()) {
            (Elem::Scalar(t), Spec::Scalar(v)) => scalar_arg(&p.name, v, t)?,
            (Elem::Ptr(_), _) => Arg::Buffer(&buffers[buf_of[i].unwrap()]),
            (Elem::Scalar(_), _) => bail!("parameter `{}` is a scalar: give a number", p.name),
        });
    }

    let meta: Vec<String> = kernel
        .meta
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let title = format!(
        "{}{} grid ({}, {}, {})",
        kernel.name,
        if meta.is_empty() {
            String::new()
        } else {
            format!("<{}>", meta.join(", "))
        },
        args.grid[0],
        args.grid[1],
        args.grid[2]
    );
    let result = if let Some(pid) = args.trace {
        if pid.iter().zip(&args.grid).any(|(p, g)| p >= g) {
            bail!("--trace {pid:?} is outside the grid {:?}", args.grid);
        }
        println!(
            "{title}: tracing program ({}, {}, {})",
            pid[0], pid[1], pid[2]
        );
        let t = interp::trace(&kernel, args.grid, &call, pid);
        for e in &t.entries {
            let loc = if e.span == tile_ir::Span::default() {
                "-".to_string()
            } else {
                let (l, c) = line_col(&src.text, e.span.start as usize);
                format!("{l}:{c}")
            };
            println!(
                "  {:>7} {:<8} {} = {}",
                loc,
                e.value.to_string(),
                e.ty,
                e.summary
            );
        }
        t.error.map_or(Ok(()), Err)
    } else {
        let t = std::time::Instant::now();
        let r = interp::run_with(
            &kernel,
            args.grid,
            &call,
            &interp::Options {
                parallel: !args.sequential,
            },
        );
        if r.is_ok() {
            let n: u64 = args.grid.iter().map(|&g| g as u64).product();
            println!(
                "{title}: {n} program instances in {:.3} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        r
    };
    if let Err(e) = result {
        eprint!("{}", e.render(&src.name, &src.text));
        return Ok(ExitCode::FAILURE);
    }
    for (i, p) in kernel.params.iter().enumerate() {
        let Some(b) = buf_of[i] else { continue };
        let buf = &buffers[b];
        let changed = buf.to_bytes() != before[b];
        let alias = kernel.params[..i]
            .iter()
            .enumerate()
            .find(|(j, _)| buf_of[*j] == Some(b))
            .map(|(_, q)| &q.name);
        let state = match (alias, changed) {
            (Some(q), _) => format!("(same buffer as `{q}`)"),
            (None, true) => "written".into(),
            (None, false) => "unchanged".into(),
        };
        println!("{}: {}[{}] {state}", p.name, buf.dtype().name(), buf.len());
        if alias.is_none() {
            println!("    {}", summarize(buf, args.show));
        }
    }
    for s in &args.save {
        let (name, path) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("`--save {s}` is not NAME=PATH"))?;
        let i = kernel.params.iter().position(|p| p.name == name.trim());
        let Some(b) = i.and_then(|i| buf_of[i]) else {
            bail!("`--save {s}`: `{name}` is not a pointer parameter")
        };
        std::fs::write(path.trim(), buffers[b].to_bytes())
            .with_context(|| format!("cannot write {path}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// The pointee of a pointer type, or the scalar type.
fn elem_scalar(e: Elem) -> Scalar {
    match e {
        Elem::Ptr(s) | Elem::Scalar(s) => s,
    }
}
