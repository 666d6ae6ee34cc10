//! A thin layer over melior for building MLIR in generic form.
//!
//! Values are kept as raw `MlirValue` handles: TIR values flow between nested
//! regions freely, which melior's borrow-based `Value<'c, 'a>` lifetimes cannot
//! express. Every handle refers to IR owned by the module under construction,
//! which outlives the [`Emitter`].

use melior::ir::attribute::AttributeLike;
use melior::ir::block::BlockLike;
use melior::ir::operation::{OperationBuilder, OperationLike};
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
        }
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

    pub fn constant(&mut self, value_attr: &str, ty: Type<'c>) -> Result<V, CodegenError> {
        self.op1("arith.constant", &[], ty, &[("value", value_attr)])
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
        let t = self.type_of(a);
        self.op1(name, &[a, b], t, &[])
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
