//! Stable text form of TIR (`--emit tir`, snapshot tests).
//!
//! ```text
//! kernel vector_add<BLOCK = 1024>(%0 a: *f32, %1 n: i32) {
//!   %2 = program_id 0 : i32
//!   %3 = arange 0..1024 : i32[1024]
//!   store %5, %6, mask %7
//!   %9 = for %i = %lb to %ub step %s iter_args(%a: f32 = %init) : f32 {
//!     yield %10
//!   }
//! }
//! ```
//! One instruction per line, results first (`%N = op operands : result types`).

use super::{BinaryOp, Block, CmpOp, Const, Inst, Kernel, Op, ReduceOp, UnaryOp, ValueId};
use std::fmt::Write;

/// Print a kernel as text.
pub fn print_kernel(kernel: &Kernel) -> String {
    let mut out = String::new();
    let meta: Vec<String> = kernel
        .meta
        .iter()
        .map(|(n, v)| format!("{n} = {v}"))
        .collect();
    let params: Vec<String> = kernel
        .params
        .iter()
        .map(|p| format!("{} {}: {}", p.value, p.name, p.ty))
        .collect();
    let _ = write!(out, "kernel {}", kernel.name);
    if !meta.is_empty() {
        let _ = write!(out, "<{}>", meta.join(", "));
    }
    let _ = writeln!(out, "({}) {{", params.join(", "));
    print_block(kernel, &kernel.body, 1, &mut out);
    out.push_str("}\n");
    out
}

fn list(vs: &[ValueId]) -> String {
    vs.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_block(k: &Kernel, b: &Block, depth: usize, out: &mut String) {
    for inst in &b.insts {
        print_inst(k, inst, depth, out);
    }
}

pub(crate) fn const_str(c: &Const) -> String {
    match c {
        Const::Int(v) => v.to_string(),
        Const::Float(v) => {
            // `{:?}` keeps a `.0` on integral values and is round-trip exact.
            format!("{v:?}")
        }
        Const::Bool(b) => b.to_string(),
    }
}

fn unary_name(op: UnaryOp) -> &'static str {
    match op {
        UnaryOp::Neg => "neg",
        UnaryOp::Not => "not",
        UnaryOp::Exp => "exp",
        UnaryOp::Exp2 => "exp2",
        UnaryOp::Log => "log",
        UnaryOp::Sqrt => "sqrt",
        UnaryOp::Rsqrt => "rsqrt",
        UnaryOp::Sigmoid => "sigmoid",
        UnaryOp::Tanh => "tanh",
        UnaryOp::Abs => "abs",
        UnaryOp::Sin => "sin",
        UnaryOp::Cos => "cos",
        UnaryOp::Erf => "erf",
        UnaryOp::Log1p => "log1p",
        UnaryOp::Expm1 => "expm1",
    }
}

fn binary_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "add",
        BinaryOp::Sub => "sub",
        BinaryOp::Mul => "mul",
        BinaryOp::Div => "div",
        BinaryOp::Rem => "rem",
        BinaryOp::Max => "max",
        BinaryOp::Min => "min",
        BinaryOp::And => "and",
        BinaryOp::Or => "or",
        BinaryOp::Xor => "xor",
        BinaryOp::Shl => "shl",
        BinaryOp::Shr => "shr",
        BinaryOp::Pow => "pow",
    }
}

fn cmp_name(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "eq",
        CmpOp::Ne => "ne",
        CmpOp::Lt => "lt",
        CmpOp::Le => "le",
        CmpOp::Gt => "gt",
        CmpOp::Ge => "ge",
    }
}

fn reduce_name(op: ReduceOp) -> &'static str {
    match op {
        ReduceOp::Sum => "sum",
        ReduceOp::Max => "max",
        ReduceOp::Min => "min",
    }
}

fn print_inst(k: &Kernel, inst: &Inst, depth: usize, out: &mut String) {
    let ind = "  ".repeat(depth);
    let ty = |v: &ValueId| {
        k.values
            .get(v.0 as usize)
            .map(|t| t.to_string())
            .unwrap_or_else(|| "?".into())
    };
    let results = if inst.results.is_empty() {
        String::new()
    } else {
        format!("{} = ", list(&inst.results))
    };
    let types = inst.results.iter().map(ty).collect::<Vec<_>>().join(", ");
    let opt =
        |name: &str, v: &Option<ValueId>| v.map(|v| format!(", {name} {v}")).unwrap_or_default();
    let body = match &inst.op {
        Op::Const(c) => format!("const {}", const_str(c)),
        Op::ProgramId(a) => format!("program_id {a}"),
        Op::NumPrograms(a) => format!("num_programs {a}"),
        Op::Arange { start, end } => format!("arange {start}..{end}"),
        Op::Splat(v) => format!("splat {v}"),
        Op::ExpandDims { value, axis } => format!("expand_dims {value}, axis {axis}"),
        Op::Broadcast(v) => format!("broadcast {v}"),
        Op::Reshape(v) => format!("reshape {v}"),
        Op::Trans { value, perm } => format!("trans {value}, perm {perm:?}"),
        Op::Unary(op, v) => format!("{} {v}", unary_name(*op)),
        Op::Binary(op, a, b) => format!("{} {a}, {b}", binary_name(*op)),
        Op::Cmp(op, a, b) => format!("cmp {} {a}, {b}", cmp_name(*op)),
        Op::Select { cond, a, b } => format!("select {cond}, {a}, {b}"),
        Op::Fma { a, b, c } => format!("fma {a}, {b}, {c}"),
        Op::Cast(v) => format!("cast {v}"),
        Op::AddPtr { ptr, offset } => format!("addptr {ptr}, {offset}"),
        Op::Load { ptr, mask, other } => {
            format!("load {ptr}{}{}", opt("mask", mask), opt("other", other))
        }
        Op::Store { ptr, value, mask } => format!("store {ptr}, {value}{}", opt("mask", mask)),
        Op::AtomicAdd { ptr, value, mask } => {
            format!("atomic_add {ptr}, {value}{}", opt("mask", mask))
        }
        Op::Reduce { op, value, axis } => {
            format!("reduce {} {value}, axis {axis}", reduce_name(*op))
        }
        Op::Dot { a, b, acc } => format!("dot {a}, {b}, {acc}"),
        Op::Yield(vs) => format!("yield {}", list(vs)).trim_end().to_string(),
        Op::For {
            lb,
            ub,
            step,
            init,
            body,
            unroll,
        } => {
            let iv = body
                .args
                .first()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "%?".into());
            let iters: Vec<String> = body
                .args
                .iter()
                .skip(1)
                .zip(init)
                .map(|(a, i)| format!("{a}: {} = {i}", ty(a)))
                .collect();
            let mut s = format!(
                "for{} {iv} = {lb} to {ub} step {step}",
                if *unroll { " static" } else { "" }
            );
            if !iters.is_empty() {
                let _ = write!(s, " iter_args({})", iters.join(", "));
            }
            if !types.is_empty() {
                let _ = write!(s, " : {types}");
            }
            let _ = writeln!(out, "{ind}{results}{s} {{");
            print_block(k, body, depth + 1, out);
            let _ = writeln!(out, "{ind}}}");
            return;
        }
        Op::If {
            cond,
            then_body,
            else_body,
        } => {
            let mut s = format!("if {cond}");
            if !types.is_empty() {
                let _ = write!(s, " : {types}");
            }
            let _ = writeln!(out, "{ind}{results}{s} {{");
            print_block(k, then_body, depth + 1, out);
            let _ = writeln!(out, "{ind}}} else {{");
            print_block(k, else_body, depth + 1, out);
            let _ = writeln!(out, "{ind}}}");
            return;
        }
    };
    if types.is_empty() {
        let _ = writeln!(out, "{ind}{results}{body}");
    } else {
        let _ = writeln!(out, "{ind}{results}{body} : {types}");
    }
}
