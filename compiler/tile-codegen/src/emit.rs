//! A thin layer over melior for building MLIR in generic form.
//!
//! Values are kept as raw `MlirValue` handles: TIR values flow between nested
//! regions freely, which melior's borrow-based `Value<'c, 'a>` lifetimes cannot
//! express. Every handle refers to IR owned by the module under construction,
//! which outlives the [`Emitter`].

use melior::ir::attribute::AttributeLike;
use melior::ir::block::BlockLike;
use melior::ir::operation::{OperationBuilder, OperationLike};
use melior::ir::r#type::TypeLike;
use melior::ir::{
    Attribute, Block, Identifier, Location, Region, RegionLike, Type, Value, ValueLike,
};
use melior::{Context, StringRef};
use mlir_sys::MlirValue;
use std::cell::RefCell;
use std::collections::HashMap;

use super::CodegenError;

pub(crate) type V = MlirValue;

pub(crate) struct Emitter<'c> {
    pub ctx: &'c Context,
    pub loc: Location<'c>,
    /// Insertion stack: ops go to the last block; nested regions push and pop.
    blocks: Vec<Block<'c>>,
    types: RefCell<HashMap<String, Type<'c>>>,
    attrs: RefCell<HashMap<String, Attribute<'c>>>,
    /// The function's entry block on the insertion stack, once begun:
    /// constants go there, once each, so every later op may use them.
    entry: Option<usize>,
    /// Constants made so far, by value and type text.
    consts: HashMap<(String, usize), V>,
    /// The integer constants among them (sign-extended), for folding.
    known: HashMap<usize, i64>,
}

impl Drop for Emitter<'_> {
    /// After a failed lowering the insertion stack still holds nested blocks
    /// whose ops use values of the blocks below them: destroy the innermost
    /// first, so no op outlives a value it uses.
    fn drop(&mut self) {
        while self.blocks.pop().is_some() {}
    }
}

impl<'c> Emitter<'c> {
    pub fn new(ctx: &'c Context) -> Self {
        Emitter {
            ctx,
            loc: Location::unknown(ctx),
            blocks: Vec::new(),
            types: RefCell::new(HashMap::new()),
            attrs: RefCell::new(HashMap::new()),
            entry: None,
            consts: HashMap::new(),
            known: HashMap::new(),
        }
    }

    /// Pushes the function's entry block (arguments `args`), where every
    /// constant made until it is popped goes.
    pub fn begin_function(&mut self, args: &[Type<'c>]) -> Vec<V> {
        let vals = self.push_block(args);
        self.entry = Some(self.blocks.len() - 1);
        vals
    }

    /// The integer value of `v` when it is a constant the emitter made.
    pub fn known(&self, v: V) -> Option<i64> {
        self.known.get(&(v.ptr as usize)).copied()
    }

    pub fn ty(&self, text: &str) -> Type<'c> {
        if let Some(t) = self.types.borrow().get(text) {
            return *t;
        }
        let t = Type::parse(self.ctx, text)
            .unwrap_or_else(|| panic!("internal: bad MLIR type `{text}`"));
        self.types.borrow_mut().insert(text.to_string(), t);
        t
    }

    pub fn attr(&self, text: &str) -> Attribute<'c> {
        if let Some(a) = self.attrs.borrow().get(text) {
            return *a;
        }
        let a = Attribute::parse(self.ctx, text)
            .unwrap_or_else(|| panic!("internal: bad MLIR attribute `{text}`"));
        self.attrs.borrow_mut().insert(text.to_string(), a);
        a
    }

    /// The type of a value.
    pub fn type_of(&self, v: V) -> Type<'c> {
        unsafe { Value::from_raw(v) }.r#type()
    }

    /// `x` when `v` is `arith.extf(x)`: the value a widening started from.
    pub fn extended_from(&self, v: V) -> Option<V> {
        // Safety: `v` is a live value of the module under construction.
        unsafe {
            if !mlir_sys::mlirValueIsAOpResult(v) {
                return None;
            }
            let op = mlir_sys::mlirOpResultGetOwner(v);
            let name = mlir_sys::mlirIdentifierStr(mlir_sys::mlirOperationGetName(op));
            let name = std::slice::from_raw_parts(name.data as *const u8, name.length);
            (name == b"arith.extf").then(|| mlir_sys::mlirOperationGetOperand(op, 0))
        }
    }

    /// How many blocks deep the insertion point is.
    pub fn depth(&self) -> usize {
        self.blocks.len()
    }

    pub fn push_block(&mut self, args: &[Type<'c>]) -> Vec<V> {
        let block = Block::new(&args.iter().map(|t| (*t, self.loc)).collect::<Vec<_>>());
        let vals = (0..args.len())
            .map(|i| block.argument(i).expect("block argument").to_raw())
            .collect();
        self.blocks.push(block);
        vals
    }

    pub fn pop_region(&mut self) -> Region<'c> {
        let block = self.blocks.pop().expect("internal: block stack underflow");
        if self.entry == Some(self.blocks.len()) {
            self.entry = None;
            self.consts.clear();
            self.known.clear();
        }
        let region = Region::new();
        region.append_block(block);
        region
    }

    /// Append a finished operation to the current block.
    pub fn append(&mut self, op: melior::ir::Operation<'c>) {
        self.blocks
            .last()
            .expect("internal: no insertion block")
            .append_operation(op);
    }

    /// Build an op in generic form and append it to the current block.
    pub fn op_full(
        &mut self,
        name: &str,
        operands: &[V],
        results: &[Type<'c>],
        attrs: &[(&str, Attribute<'c>)],
        regions: Vec<Region<'c>>,
    ) -> Result<Vec<V>, CodegenError> {
        let operands: Vec<Value> = operands
            .iter()
            .map(|v| unsafe { Value::from_raw(*v) })
            .collect();
        let attrs: Vec<(Identifier, Attribute)> = attrs
            .iter()
            .map(|(n, a)| (Identifier::new(self.ctx, n), *a))
            .collect();
        let op = OperationBuilder::new(name, self.loc)
            .add_operands(&operands)
            .add_results(results)
            .add_attributes(&attrs)
            .add_regions_vec(regions)
            .build()
            .map_err(|e| CodegenError::Internal(format!("building `{name}`: {e}")))?;
        let block = self.blocks.last().expect("internal: no insertion block");
        let op = block.append_operation(op);
        Ok((0..op.result_count())
            .map(|i| op.result(i).expect("result").to_raw())
            .collect())
    }

    /// An op with attributes given as text.
    pub fn op(
        &mut self,
        name: &str,
        operands: &[V],
        results: &[Type<'c>],
        attrs: &[(&str, &str)],
    ) -> Result<Vec<V>, CodegenError> {
        let attrs: Vec<(&str, Attribute)> = attrs.iter().map(|(n, a)| (*n, self.attr(a))).collect();
        self.op_full(name, operands, results, &attrs, vec![])
    }

    /// An op with exactly one result.
    pub fn op1(
        &mut self,
        name: &str,
        operands: &[V],
        result: Type<'c>,
        attrs: &[(&str, &str)],
    ) -> Result<V, CodegenError> {
        Ok(self.op(name, operands, &[result], attrs)?[0])
    }

    /// Constant `value_attr` of type `ty`: inside a function, one op per
    /// value and type, at the top of the entry block (emitting per element
    /// made tens of thousands of duplicates for LLVM to clean up).
    pub fn constant(&mut self, value_attr: &str, ty: Type<'c>) -> Result<V, CodegenError> {
        let Some(entry) = self.entry else {
            return self.op1("arith.constant", &[], ty, &[("value", value_attr)]);
        };
        let key = (value_attr.to_string(), ty.to_raw().ptr as usize);
        if let Some(v) = self.consts.get(&key) {
            return Ok(*v);
        }
        let op = OperationBuilder::new("arith.constant", self.loc)
            .add_results(&[ty])
            .add_attributes(&[(Identifier::new(self.ctx, "value"), self.attr(value_attr))])
            .build()
            .map_err(|e| CodegenError::Internal(format!("building a constant: {e}")))?;
        let op = self.blocks[entry].insert_operation(0, op);
        let v = op.result(0).expect("result").to_raw();
        let int = match value_attr {
            "true" => Some(-1),
            "false" => Some(0),
            _ => value_attr
                .strip_suffix(" : i32")
                .or_else(|| value_attr.strip_suffix(" : i64"))
                .and_then(|n| n.parse::<i64>().ok()),
        };
        if let Some(x) = int {
            self.known.insert(v.ptr as usize, x);
        }
        self.consts.insert(key, v);
        Ok(v)
    }

    /// An i32 constant whose value is set later with
    /// [`set_constant`](Self::set_constant): never shared, never folded.
    pub fn placeholder_i32(&mut self) -> Result<V, CodegenError> {
        let t = self.ty("i32");
        self.op1("arith.constant", &[], t, &[("value", "0 : i32")])
    }

    pub fn i32(&mut self, x: i64) -> Result<V, CodegenError> {
        let t = self.ty("i32");
        self.constant(&format!("{x} : i32"), t)
    }

    /// Gives constant `v` (made by [`constant`](Self::constant) or its
    /// shorthands) the value `value_attr` instead, as if made with it: for
    /// values known only once the whole kernel is emitted.
    pub fn set_constant(&mut self, v: V, value_attr: &str) {
        let attr = self.attr(value_attr);
        unsafe {
            mlir_sys::mlirOperationSetAttributeByName(
                mlir_sys::mlirOpResultGetOwner(v),
                StringRef::new("value").to_raw(),
                attr.to_raw(),
            )
        }
    }

    pub fn i64(&mut self, x: i64) -> Result<V, CodegenError> {
        let t = self.ty("i64");
        self.constant(&format!("{x} : i64"), t)
    }

    pub fn bool(&mut self, x: bool) -> Result<V, CodegenError> {
        let t = self.ty("i1");
        self.constant(if x { "true" } else { "false" }, t)
    }

    pub fn binop(&mut self, name: &str, a: V, b: V) -> Result<V, CodegenError> {
        if let Some(v) = self.fold(name, a, b)? {
            return Ok(v);
        }
        let t = self.type_of(a);
        self.op1(name, &[a, b], t, &[])
    }

    /// `name(a, b)` without an op where an operand is a known identity or
    /// both are known (i32/i64, wrapping like the ops; i1 as -1/0).
    fn fold(&mut self, name: &str, a: V, b: V) -> Result<Option<V>, CodegenError> {
        let (ka, kb) = (self.known(a), self.known(b));
        if ka.is_none() && kb.is_none() {
            return Ok(None);
        }
        let t = self.type_of(a);
        let bits = if t == self.ty("i32") {
            32
        } else if t == self.ty("i64") {
            64
        } else if t == self.ty("i1") {
            1
        } else {
            return Ok(None);
        };
        if let (Some(x), Some(y)) = (ka, kb) {
            let r = match name {
                "arith.addi" => x.wrapping_add(y),
                "arith.subi" => x.wrapping_sub(y),
                "arith.muli" => x.wrapping_mul(y),
                "arith.andi" => x & y,
                "arith.ori" => x | y,
                "arith.xori" => x ^ y,
                "arith.shli" if (0..bits).contains(&y) => x.wrapping_shl(y as u32),
                _ => return Ok(None),
            };
            // Back to the type's width, sign-extended like `known` holds it.
            let r = (r << (64 - bits)) >> (64 - bits);
            let v = match bits {
                1 => self.bool(r != 0)?,
                32 => self.i32(r)?,
                _ => self.i64(r)?,
            };
            return Ok(Some(v));
        }
        let ones = -1;
        Ok(match (name, ka, kb) {
            ("arith.addi" | "arith.ori" | "arith.xori", Some(0), _) => Some(b),
            ("arith.addi" | "arith.subi" | "arith.ori" | "arith.xori", _, Some(0)) => Some(a),
            ("arith.shli" | "arith.shrui" | "arith.shrsi", _, Some(0)) => Some(a),
            ("arith.muli", Some(1), _) if bits > 1 => Some(b),
            ("arith.muli", _, Some(1)) if bits > 1 => Some(a),
            ("arith.muli" | "arith.andi", Some(0), _) => Some(a),
            ("arith.muli" | "arith.andi", _, Some(0)) => Some(b),
            ("arith.andi", Some(x), _) if x == ones => Some(b),
            ("arith.andi", _, Some(y)) if y == ones => Some(a),
            ("arith.ori", Some(x), _) if x == ones => Some(a),
            ("arith.ori", _, Some(y)) if y == ones => Some(b),
            _ => None,
        })
    }

    pub fn cmpi(&mut self, pred: &str, a: V, b: V) -> Result<V, CodegenError> {
        let t = self.ty("i1");
        let code = [
            "eq", "ne", "slt", "sle", "sgt", "sge", "ult", "ule", "ugt", "uge",
        ]
        .iter()
        .position(|p| *p == pred)
        .expect("internal: cmpi predicate");
        self.op1(
            "arith.cmpi",
            &[a, b],
            t,
            &[("predicate", &format!("{code} : i64"))],
        )
    }

    pub fn cmpf(&mut self, pred: &str, a: V, b: V) -> Result<V, CodegenError> {
        let t = self.ty("i1");
        let code = [
            "false", "oeq", "ogt", "oge", "olt", "ole", "one", "ord", "ueq", "ugt", "uge", "ult",
            "ule", "une", "uno", "true",
        ]
        .iter()
        .position(|p| *p == pred)
        .expect("internal: cmpf predicate");
        self.op1(
            "arith.cmpf",
            &[a, b],
            t,
            &[("predicate", &format!("{code} : i64"))],
        )
    }

    pub fn and_all(&mut self, conds: &[V]) -> Result<Option<V>, CodegenError> {
        let mut acc: Option<V> = None;
        for &c in conds {
            acc = Some(match acc {
                None => c,
                Some(a) => self.binop("arith.andi", a, c)?,
            });
        }
        Ok(acc)
    }

    /// `c`, marked as expected true (`llvm.expect`, hence branch weights):
    /// the vector path of a copy, so that LLVM lays its per-element slow
    /// path out of line instead of inside the loop around it.
    pub fn likely(&mut self, c: V) -> Result<V, CodegenError> {
        let t = self.ty("i1");
        let yes = self.bool(true)?;
        self.call_intrinsic("llvm.expect.i1", &[c, yes], t)
    }

    pub fn select(&mut self, c: V, a: V, b: V) -> Result<V, CodegenError> {
        let t = self.type_of(a);
        self.op1("arith.select", &[c, a, b], t, &[])
    }

    pub fn call_intrinsic(
        &mut self,
        intrin: &str,
        args: &[V],
        result: Type<'c>,
    ) -> Result<V, CodegenError> {
        let seg = format!("array<i32: {}, 0>", args.len());
        self.op1(
            "llvm.call_intrinsic",
            args,
            result,
            &[
                ("intrin", &format!("\"{intrin}\"")),
                ("fastmathFlags", "#llvm.fastmath<none>"),
                ("op_bundle_sizes", "array<i32>"),
                ("operandSegmentSizes", &seg),
            ],
        )
    }

    /// `scf.if` with results; `then`/`els` emit their branch and return the yielded values.
    pub fn if_else(
        &mut self,
        cond: V,
        results: &[Type<'c>],
        then: &mut dyn FnMut(&mut Self) -> Result<Vec<V>, CodegenError>,
        els: &mut dyn FnMut(&mut Self) -> Result<Vec<V>, CodegenError>,
    ) -> Result<Vec<V>, CodegenError> {
        self.push_block(&[]);
        let y = then(self)?;
        self.op("scf.yield", &y, &[], &[])?;
        let r1 = self.pop_region();
        self.push_block(&[]);
        let y = els(self)?;
        self.op("scf.yield", &y, &[], &[])?;
        let r2 = self.pop_region();
        self.op_full("scf.if", &[cond], results, &[], vec![r1, r2])
    }

    /// `for i in 0..n` (i32 `i`) as an `scf.for` that LLVM keeps rolled
    /// (`loop_annotation`, which the CF lowering moves to the back edge):
    /// for the per-element slow path of a copy, where unrolling would
    /// multiply code that runs only at ragged edges, and which the NVPTX
    /// scalar passes (strength reduction above all) pay for per copy.
    pub fn rolled_loop(
        &mut self,
        n: u32,
        body: &mut dyn FnMut(&mut Self, V) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let i = self.begin_rolled_loop(n)?;
        body(self, i)?;
        self.end_rolled_loop(n)
    }

    /// [`rolled_loop`](Self::rolled_loop) in two halves, for a body emitted
    /// by a caller that holds the emitter (the lowering): opens the body and
    /// returns its index `i`; [`end_rolled_loop`](Self::end_rolled_loop)
    /// with the same `n` closes it.
    pub fn begin_rolled_loop(&mut self, n: u32) -> Result<V, CodegenError> {
        // The bounds first (constants, made once in the entry block).
        let _ = (self.i32(0)?, self.i32(n as i64)?, self.i32(1)?);
        let it = self.ty("i32");
        Ok(self.push_block(&[it])[0])
    }

    /// Closes the body [`begin_rolled_loop`](Self::begin_rolled_loop) opened,
    /// as the loop `for i in 0..n`.
    pub fn end_rolled_loop(&mut self, n: u32) -> Result<(), CodegenError> {
        self.op("scf.yield", &[], &[], &[])?;
        let region = self.pop_region();
        let (lb, ub, step) = (self.i32(0)?, self.i32(n as i64)?, self.i32(1)?);
        let keep_rolled = self.attr("#llvm.loop_annotation<unroll = <disable = true>>");
        self.op_full(
            "scf.for",
            &[lb, ub, step],
            &[],
            &[("loop_annotation", keep_rolled)],
            vec![region],
        )?;
        Ok(())
    }

    /// `scf.if` without results or else branch.
    pub fn if_then(
        &mut self,
        cond: V,
        then: &mut dyn FnMut(&mut Self) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        self.push_block(&[]);
        then(self)?;
        self.op("scf.yield", &[], &[], &[])?;
        let r1 = self.pop_region();
        self.push_block(&[]);
        self.op("scf.yield", &[], &[], &[])?;
        let r2 = self.pop_region();
        self.op_full("scf.if", &[cond], &[], &[], vec![r1, r2])?;
        Ok(())
    }

    /// Inline PTX `text` (operands `$0…`, outputs first) with LLVM
    /// constraints; side-effecting, so it keeps its place among the others.
    pub fn inline_asm(
        &mut self,
        text: &str,
        constraints: &str,
        operands: &[V],
        results: &[Type<'c>],
    ) -> Result<Vec<V>, CodegenError> {
        let res: Vec<Type> = match results.len() {
            0 | 1 => results.to_vec(),
            _ => {
                let f: Vec<String> = results.iter().map(|t| t.to_string()).collect();
                vec![self.ty(&format!("!llvm.struct<({})>", f.join(", ")))]
            }
        };
        let out = self.op(
            "llvm.inline_asm",
            operands,
            &res,
            &[
                ("asm_string", &format!("\"{text}\"")),
                ("constraints", &format!("\"{constraints}\"")),
                ("has_side_effects", "unit"),
            ],
        )?;
        if results.len() <= 1 {
            return Ok(out);
        }
        (0..results.len())
            .map(|i| {
                self.op1(
                    "llvm.extractvalue",
                    &[out[0]],
                    results[i],
                    &[("position", &format!("array<i64: {i}>"))],
                )
            })
            .collect()
    }
}
