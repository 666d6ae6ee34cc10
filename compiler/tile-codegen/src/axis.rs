//! Contiguity analysis along the last dimension (the part of Triton's axis
//! analysis that decides vector width): for every integer or pointer value,
//! `contig` is the length of the aligned runs of consecutive values (`+1` per
//! element) and `constancy` the length of the aligned runs of equal values. Both
//! are powers of two and never exceed the last dimension.
//!
//! Alignment is *not* proved here: code generation checks it at run time for
//! each vector (one `and` per 16 bytes), so a kernel is fast whenever its
//! arguments happen to be aligned, without recompiling per divisibility class.

use std::collections::HashMap;
use tile_ir::{BinaryOp, Block, Kernel, Op, ValueId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AxisInfo {
    pub contig: u32,
    pub constancy: u32,
}

pub(crate) fn analyze(kernel: &Kernel) -> HashMap<ValueId, AxisInfo> {
    let mut info = HashMap::new();
    visit(kernel, &kernel.body, &mut info);
    info
}

fn last_dim(kernel: &Kernel, v: ValueId) -> u32 {
    kernel.ty(v).shape.last().copied().unwrap_or(1)
}

fn get(info: &HashMap<ValueId, AxisInfo>, kernel: &Kernel, v: ValueId) -> AxisInfo {
    let _ = kernel;
    info.get(&v).copied().unwrap_or(AxisInfo {
        contig: 1,
        constancy: 1,
    })
}

fn visit(kernel: &Kernel, block: &Block, info: &mut HashMap<ValueId, AxisInfo>) {
    for inst in &block.insts {
        // Nested blocks first: a `for` or `if` without results still holds
        // the loads and stores that need the analysis.
        match &inst.op {
            Op::For { body, .. } => visit(kernel, body, info),
            Op::If {
                then_body,
                else_body,
                ..
            } => {
                visit(kernel, then_body, info);
                visit(kernel, else_body, info);
            }
            _ => {}
        }
        let Some(&r) = inst.results.first() else {
            continue;
        };
        let n = last_dim(kernel, r);
        let a = match &inst.op {
            Op::Arange { start, end } => AxisInfo {
                contig: (end - start) as u32,
                constancy: 1,
            },
            Op::Splat(_) | Op::Const(_) | Op::ProgramId(_) | Op::NumPrograms(_) => AxisInfo {
                contig: 1,
                constancy: n,
            },
            Op::Broadcast(v) => {
                let src_last = last_dim(kernel, *v);
                if src_last == 1 {
                    AxisInfo {
                        contig: 1,
                        constancy: n,
                    }
                } else {
                    get(info, kernel, *v)
                }
            }
            Op::ExpandDims { value, axis } => {
                if *axis as usize == kernel.ty(r).shape.len() - 1 {
                    AxisInfo {
                        contig: 1,
                        constancy: 1,
                    }
                } else {
                    get(info, kernel, *value)
                }
            }
            Op::Cast(v) if kernel.ty(*v).scalar_elem().is_some_and(|s| s.is_int()) => {
                get(info, kernel, *v)
            }
            Op::Binary(BinaryOp::Add, x, y) | Op::AddPtr { ptr: x, offset: y } => {
                let (p, q) = (get(info, kernel, *x), get(info, kernel, *y));
                AxisInfo {
                    contig: p.contig.min(q.constancy).max(q.contig.min(p.constancy)),
                    constancy: p.constancy.min(q.constancy),
                }
            }
            Op::Binary(BinaryOp::Sub, x, y) => {
                let (p, q) = (get(info, kernel, *x), get(info, kernel, *y));
                AxisInfo {
                    contig: p.contig.min(q.constancy),
                    constancy: p.constancy.min(q.constancy),
                }
            }
            Op::Binary(_, x, y) | Op::Cmp(_, x, y) => {
                let (p, q) = (get(info, kernel, *x), get(info, kernel, *y));
                AxisInfo {
                    contig: 1,
                    constancy: p.constancy.min(q.constancy),
                }
            }
            _ => continue,
        };
        info.insert(
            r,
            AxisInfo {
                contig: a.contig.clamp(1, n),
                constancy: a.constancy.clamp(1, n),
            },
        );
    }
}
