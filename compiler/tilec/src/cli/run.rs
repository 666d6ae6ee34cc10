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
use std::path::PathBuf;
use std::process::ExitCode;
use tile_interp::{self as interp, Arg, Buffer};

use tile_runtime::argspec::{ArgSpecs, ARG_HELP};

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
        None,
        None,
    )? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };

    // Parameter values, parsed and made as tile-tune makes them.
    let specs = ArgSpecs::parse(&kernel.signature(), &args.args)?;
    let host = specs.make_host(args.seed)?;
    let (buffers, buf_of) = (&host.buffers, &host.buf_of);
    let before: Vec<Vec<u8>> = buffers.iter().map(Buffer::to_bytes).collect();
    let call: Vec<Arg> = host.interp_args();

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
