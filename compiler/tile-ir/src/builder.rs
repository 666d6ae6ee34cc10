//! A small builder for TIR, for tests of the stages after the front end
//! (code generation, interpreter) that must not depend on the parser.

use super::*;

pub struct Builder {
    pub kernel: Kernel,
    /// Instruction lists being built; nested bodies push a new one.
    stack: Vec<Vec<Inst>>,
}

impl Builder {
    pub fn new(name: &str) -> Builder {
        Builder {
            kernel: Kernel {
                name: name.into(),
                params: vec![],
                meta: vec![],
                body: Block::default(),
                values: vec![],
            },
            stack: vec![vec![]],
        }
    }

    pub fn param(&mut self, name: &str, ty: Type) -> ValueId {
        let v = self.kernel.new_value(ty.clone());
        self.kernel.params.push(Param {
            name: name.into(),
            value: v,
            ty,
        });
        v
    }

    pub fn ptr_param(&mut self, name: &str, s: Scalar) -> ValueId {
        self.param(
            name,
            Type {
                elem: Elem::Ptr(s),
                shape: vec![],
            },
        )
    }

    /// Append an op with one result of type `ty`.
    pub fn op(&mut self, op: Op, ty: Type) -> ValueId {
        let r = self.kernel.new_value(ty);
        self.stack.last_mut().unwrap().push(Inst {
            results: vec![r],
            op,
            span: Span::default(),
        });
        r
    }

    /// Append an op without results.
    pub fn stmt(&mut self, op: Op) {
        self.stack.last_mut().unwrap().push(Inst {
            results: vec![],
            op,
            span: Span::default(),
        });
    }

    pub fn ty(&self, v: ValueId) -> Type {
        self.kernel.ty(v).clone()
    }

    pub fn i32(&mut self, x: i64) -> ValueId {
        self.op(Op::Const(Const::Int(x)), Type::scalar(Scalar::I32))
    }

    pub fn f32(&mut self, x: f64) -> ValueId {
        self.op(Op::Const(Const::Float(x)), Type::scalar(Scalar::F32))
    }

    pub fn constant(&mut self, c: Const, s: Scalar) -> ValueId {
        self.op(Op::Const(c), Type::scalar(s))
    }

    pub fn program_id(&mut self, axis: u8) -> ValueId {
        self.op(Op::ProgramId(axis), Type::scalar(Scalar::I32))
    }

    pub fn arange(&mut self, n: u32) -> ValueId {
        self.op(
            Op::Arange {
                start: 0,
                end: n as i64,
            },
            Type::tile(Scalar::I32, vec![n]),
        )
    }

    pub fn splat(&mut self, v: ValueId, shape: &[u32]) -> ValueId {
        let t = self.ty(v).with_shape(shape.to_vec());
        self.op(Op::Splat(v), t)
    }

    pub fn expand(&mut self, v: ValueId, axis: u32) -> ValueId {
        let mut shape = self.ty(v).shape;
        shape.insert(axis as usize, 1);
        let t = self.ty(v).with_shape(shape);
        self.op(Op::ExpandDims { value: v, axis }, t)
    }

    pub fn broadcast(&mut self, v: ValueId, shape: &[u32]) -> ValueId {
        let t = self.ty(v).with_shape(shape.to_vec());
        self.op(Op::Broadcast(v), t)
    }

    /// Splat scalars and broadcast size-1 dimensions so that `a` and `b` have equal shapes.
    pub fn unify(&mut self, a: ValueId, b: ValueId) -> (ValueId, ValueId) {
        let (sa, sb) = (self.ty(a).shape, self.ty(b).shape);
        if sa == sb {
            return (a, b);
        }
        if sa.is_empty() {
            return (self.splat(a, &sb), b);
        }
        if sb.is_empty() {
            return (a, self.splat(b, &sa));
        }
        let shape: Vec<u32> = sa.iter().zip(&sb).map(|(x, y)| *x.max(y)).collect();
        let a = if sa != shape {
            self.broadcast(a, &shape)
        } else {
            a
        };
        let b = if sb != shape {
            self.broadcast(b, &shape)
        } else {
            b
        };
        (a, b)
    }

    pub fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> ValueId {
        let (a, b) = self.unify(a, b);
        let t = self.ty(a);
        self.op(Op::Binary(op, a, b), t)
    }

    pub fn add(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Add, a, b)
    }

    pub fn mul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Mul, a, b)
    }

    pub fn cmp(&mut self, op: CmpOp, a: ValueId, b: ValueId) -> ValueId {
        let (a, b) = self.unify(a, b);
        let t = Type::tile(Scalar::I1, self.ty(a).shape);
        self.op(Op::Cmp(op, a, b), t)
    }

    pub fn and(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::And, a, b)
    }

    pub fn unary(&mut self, op: UnaryOp, a: ValueId) -> ValueId {
        let t = self.ty(a);
        self.op(Op::Unary(op, a), t)
    }

    pub fn cast(&mut self, v: ValueId, s: Scalar) -> ValueId {
        let t = Type::tile(s, self.ty(v).shape);
        self.op(Op::Cast(v), t)
    }

    /// `ptr + offsets`, splatting a scalar pointer over the offsets' shape.
    pub fn add_ptr(&mut self, ptr: ValueId, offset: ValueId) -> ValueId {
        let (p, o) = self.unify(ptr, offset);
        let t = self.ty(p);
        self.op(Op::AddPtr { ptr: p, offset: o }, t)
    }

    pub fn load(&mut self, ptr: ValueId, mask: Option<ValueId>, other: Option<f64>) -> ValueId {
        let Elem::Ptr(s) = self.ty(ptr).elem else {
            panic!("load through a non-pointer")
        };
        let shape = self.ty(ptr).shape;
        let other = other.map(|x| {
            let c = self.constant(Const::Float(x), s);
            self.splat(c, &shape)
        });
        self.op(Op::Load { ptr, mask, other }, Type::tile(s, shape))
    }

    pub fn store(&mut self, ptr: ValueId, value: ValueId, mask: Option<ValueId>) {
        self.stmt(Op::Store { ptr, value, mask });
    }

    pub fn reduce(&mut self, op: ReduceOp, v: ValueId, axis: u32) -> ValueId {
        let mut shape = self.ty(v).shape;
        shape.remove(axis as usize);
        let t = self.ty(v).with_shape(shape);
        self.op(Op::Reduce { op, value: v, axis }, t)
    }

    pub fn dot(&mut self, a: ValueId, b: ValueId, acc: ValueId) -> ValueId {
        let t = self.ty(acc);
        self.op(Op::Dot { a, b, acc }, t)
    }

    /// `for iv in lb..ub step step` carrying `init`; `body(builder, iv, carried)` returns the yielded values.
    pub fn for_loop(
        &mut self,
        lb: ValueId,
        ub: ValueId,
        step: ValueId,
        init: &[ValueId],
        body: impl FnOnce(&mut Builder, ValueId, &[ValueId]) -> Vec<ValueId>,
    ) -> Vec<ValueId> {
        let iv = self.kernel.new_value(self.ty(lb));
        let args: Vec<ValueId> = init
            .iter()
            .map(|v| self.kernel.new_value(self.ty(*v)))
            .collect();
        self.stack.push(vec![]);
        let ys = body(self, iv, &args);
        self.stmt(Op::Yield(ys));
        let insts = self.stack.pop().unwrap();
        let results: Vec<ValueId> = init
            .iter()
            .map(|v| self.kernel.new_value(self.ty(*v)))
            .collect();
        let mut block_args = vec![iv];
        block_args.extend(&args);
        self.stack.last_mut().unwrap().push(Inst {
            results: results.clone(),
            op: Op::For {
                lb,
                ub,
                step,
                init: init.to_vec(),
                body: Block {
                    args: block_args,
                    insts,
                },
                unroll: false,
            },
            span: Span::default(),
        });
        results
    }

    pub fn finish(mut self) -> Kernel {
        self.kernel.body.insts = self.stack.pop().unwrap();
        self.kernel
    }
}
