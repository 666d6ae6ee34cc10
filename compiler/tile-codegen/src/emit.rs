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
use std::collections::{HashMap, HashSet};

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
    /// Constants whose value is set later ([`placeholder_i32`](Self::placeholder_i32)):
    /// ops on them stay `arith`, for MLIR's folders to see the final value.
    placeholders: HashSet<usize>,
    /// Integer ops as `arith` ops for MLIR to fold ([`with_arith_integer_ops`]).
    arith_only: bool,
}

thread_local! {
    static ARITH_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the emitters it creates making integer ops, comparisons and
/// selects as `arith` ops, folded by MLIR's folders as before the emitter
/// made LLVM dialect ops itself: the reference the emitter's own folds must
/// match (the PTX must be the same either way; a test compares them).
pub fn with_arith_integer_ops<T>(f: impl FnOnce() -> T) -> T {
    let before = ARITH_ONLY.with(|a| a.replace(true));
    let out = f();
    ARITH_ONLY.with(|a| a.set(before));
    out
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
            placeholders: HashSet::new(),
            arith_only: ARITH_ONLY.with(|a| a.get()),
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
        let (op, name) = self.defining_op(v)?;
        (name == b"arith.extf").then(|| Self::operand(op, 0))
    }

    /// The op that made `v` and its name (none for a block argument).
    fn defining_op(&self, v: V) -> Option<(mlir_sys::MlirOperation, &'c [u8])> {
        // Safety: `v` is a live value of the module under construction, and
        // an op's name is an identifier the context owns (it outlives `'c`).
        unsafe {
            if !mlir_sys::mlirValueIsAOpResult(v) {
                return None;
            }
            let op = mlir_sys::mlirOpResultGetOwner(v);
            let name = mlir_sys::mlirIdentifierStr(mlir_sys::mlirOperationGetName(op));
            Some((
                op,
                std::slice::from_raw_parts(name.data as *const u8, name.length),
            ))
        }
    }

    /// Operand `i` of `op`, an op of the module under construction.
    fn operand(op: mlir_sys::MlirOperation, i: isize) -> V {
        // Safety: callers ask only for operands the op has.
        unsafe { mlir_sys::mlirOperationGetOperand(op, i) }
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
        let v = self.op1("arith.constant", &[], t, &[("value", "0 : i32")])?;
        self.placeholders.insert(v.ptr as usize);
        Ok(v)
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

    /// Integer `name(a, b)` (an `arith` op name), folded where MLIR's
    /// folders would fold it, else emitted as its one-to-one `llvm` op:
    /// `convert-gpu-to-nvvm` then has nothing to convert, which was half of
    /// its time on attention (the LLVM IR is the same: the folds here are
    /// those the pass's greedy rewrite applied to the `arith` ops).
    pub fn binop(&mut self, name: &str, a: V, b: V) -> Result<V, CodegenError> {
        if let Some(v) = self.fold(name, a, b)? {
            return Ok(v);
        }
        let t = self.type_of(a);
        let llvm = match name {
            "arith.addi" => "llvm.add",
            "arith.subi" => "llvm.sub",
            "arith.muli" => "llvm.mul",
            "arith.andi" => "llvm.and",
            "arith.ori" => "llvm.or",
            "arith.xori" => "llvm.xor",
            "arith.shli" => "llvm.shl",
            "arith.shrui" => "llvm.lshr",
            "arith.shrsi" => "llvm.ashr",
            _ => name,
        };
        // `x ^ -1` (a not) stays `arith.xori`: `scf.if`'s folder turns
        // `if !c` into `if c` with its branches swapped only for that op.
        let not = name == "arith.xori" && (self.known(a) == Some(-1) || self.known(b) == Some(-1));
        if llvm == name
            || not
            || self.arith_only
            || self.is_placeholder(a)
            || self.is_placeholder(b)
        {
            let r = self.op1(name, &[a, b], t, &[])?;
            // Folded to a constant once the placeholder is set: ops on it
            // stay `arith` too.
            if self.known_or_placeholder(a) && self.known_or_placeholder(b) {
                self.placeholders.insert(r.ptr as usize);
            }
            return Ok(r);
        }
        // MLIR's folder puts a commutative op's constant operand last.
        let commutative = matches!(
            name,
            "arith.addi" | "arith.muli" | "arith.andi" | "arith.ori" | "arith.xori"
        );
        let (a, b) = if commutative && self.known(a).is_some() && self.known(b).is_none() {
            (b, a)
        } else {
            (a, b)
        };
        self.op1(llvm, &[a, b], t, &[])
    }

    fn is_placeholder(&self, v: V) -> bool {
        self.placeholders.contains(&(v.ptr as usize))
    }

    fn known_or_placeholder(&self, v: V) -> bool {
        self.known(v).is_some() || self.is_placeholder(v)
    }

    /// The predicate and operands of `v` when an integer comparison made it.
    fn cmp_of(&self, v: V) -> Option<(i64, V, V)> {
        let (op, name) = self.defining_op(v)?;
        if name != b"llvm.icmp" && name != b"arith.cmpi" {
            return None;
        }
        // Safety: both comparison ops have an integer `predicate`.
        let pred = unsafe {
            mlir_sys::mlirIntegerAttrGetValueInt(mlir_sys::mlirOperationGetAttributeByName(
                op,
                StringRef::new("predicate").to_raw(),
            ))
        };
        Some((pred, Self::operand(op, 0), Self::operand(op, 1)))
    }

    /// The kind and operands of `v` when an add, sub, xor or and made it.
    fn def_of(&self, v: V) -> Option<(&'static str, V, V)> {
        let (op, name) = self.defining_op(v)?;
        let name = match name {
            b"llvm.add" | b"arith.addi" => "add",
            b"llvm.sub" | b"arith.subi" => "sub",
            b"llvm.xor" | b"arith.xori" => "xor",
            b"llvm.and" | b"arith.andi" => "and",
            _ => return None,
        };
        Some((name, Self::operand(op, 0), Self::operand(op, 1)))
    }

    /// `name(a, b)` without an op where an operand is a known identity or
    /// both are known (i32/i64, wrapping like the ops; i1 as -1/0).
    fn fold(&mut self, name: &str, a: V, b: V) -> Result<Option<V>, CodegenError> {
        let (ka, kb) = (self.known(a), self.known(b));
        if ka.is_none() && kb.is_none() {
            return self.fold_structural(name, a, b);
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
            return Ok(Some(self.int_like(a, r)?));
        }
        let ones = -1;
        let identity = match (name, ka, kb) {
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
        };
        match identity {
            Some(v) => Ok(Some(v)),
            None => self.fold_structural(name, a, b),
        }
    }

    /// Constant `x` of the integer type of `like` (i1, i32 or i64; `x`
    /// sign-extended as `known` holds it).
    fn int_like(&mut self, like: V, x: i64) -> Result<V, CodegenError> {
        let t = self.type_of(like);
        if t == self.ty("i1") {
            self.bool(x != 0)
        } else if t == self.ty("i64") {
            self.i64(x)
        } else {
            self.i32(x)
        }
    }

    /// The folds of MLIR's `arith` folders that need no constant operand
    /// (`ArithOps.cpp`): x - x, x ^ x; an add undone by a sub (or a xor by
    /// a xor); x & !x, x | !x; (a & b) & a.
    fn fold_structural(&mut self, name: &str, a: V, b: V) -> Result<Option<V>, CodegenError> {
        let folded = matches!(
            name,
            "arith.addi" | "arith.subi" | "arith.xori" | "arith.andi" | "arith.ori"
        );
        if self.arith_only || !folded {
            return Ok(None);
        }
        if a.ptr == b.ptr {
            return Ok(match name {
                "arith.xori" | "arith.subi" => Some(self.int_like(a, 0)?),
                _ => None,
            });
        }
        let (da, db) = (self.def_of(a), self.def_of(b));
        // (x, -1) when `d` is `x ^ -1`.
        let not_of = |d: Option<(&str, V, V)>| match d {
            Some(("xor", x, m)) if self.known(m) == Some(-1) => Some((x, m)),
            Some(("xor", m, x)) if self.known(m) == Some(-1) => Some((x, m)),
            _ => None,
        };
        // `!a` in `b` or `!b` in `a`: the -1 of that not.
        let a_not_b = not_of(db).filter(|(x, _)| x.ptr == a.ptr);
        let b_not_a = not_of(da).filter(|(x, _)| x.ptr == b.ptr);
        let complement = a_not_b.or(b_not_a).map(|(_, m)| m);
        Ok(match (name, da, db) {
            // (x - y) + y, y + (x - y)
            ("arith.addi", Some(("sub", x, y)), _) if y.ptr == b.ptr => Some(x),
            ("arith.addi", _, Some(("sub", x, y))) if y.ptr == a.ptr => Some(x),
            // (x + y) - y, (x + y) - x
            ("arith.subi", Some(("add", x, y)), _) if y.ptr == b.ptr => Some(x),
            ("arith.subi", Some(("add", x, y)), _) if x.ptr == b.ptr => Some(y),
            // (x ^ y) ^ y and its commutations
            ("arith.xori", Some(("xor", x, y)), _) if y.ptr == b.ptr => Some(x),
            ("arith.xori", Some(("xor", x, y)), _) if x.ptr == b.ptr => Some(y),
            ("arith.xori", _, Some(("xor", x, y))) if y.ptr == a.ptr => Some(x),
            ("arith.xori", _, Some(("xor", x, y))) if x.ptr == a.ptr => Some(y),
            // x & !x, !x & x: zero
            ("arith.andi", ..) if complement.is_some() => Some(self.int_like(a, 0)?),
            // (x & y) & x and its commutations: the inner and
            ("arith.andi", Some(("and", x, y)), _) if x.ptr == b.ptr || y.ptr == b.ptr => Some(a),
            ("arith.andi", _, Some(("and", x, y))) if x.ptr == a.ptr || y.ptr == a.ptr => Some(b),
            // x | !x, !x | x: all ones (the not's own -1)
            ("arith.ori", ..) => complement,
            _ => None,
        })
    }

    /// Integer comparison: `llvm.icmp`, its constant operand last (as
    /// MLIR's folder leaves it), except where the folder would fold it
    /// (equal or constant operands, an `i1` or an extension compared with a
    /// constant), which stays `arith.cmpi` for it to fold.
    pub fn cmpi(&mut self, pred: &str, a: V, b: V) -> Result<V, CodegenError> {
        const PREDS: [&str; 10] = [
            "eq", "ne", "slt", "sle", "sgt", "sge", "ult", "ule", "ugt", "uge",
        ];
        // The predicate with its operands swapped.
        const MIRRORED: [usize; 10] = [0, 1, 4, 5, 2, 3, 8, 9, 6, 7];
        let t = self.ty("i1");
        let mut code = PREDS
            .iter()
            .position(|p| *p == pred)
            .expect("internal: cmpi predicate");
        let (ca, cb) = (self.known_or_placeholder(a), self.known_or_placeholder(b));
        let folds = self.arith_only
            || a.ptr == b.ptr
            || (ca && cb)
            || self.is_placeholder(a)
            || self.is_placeholder(b)
            || (cb && (self.type_of(a) == t || self.is_extension(a)));
        if folds {
            return self.op1(
                "arith.cmpi",
                &[a, b],
                t,
                &[("predicate", &format!("{code} : i64"))],
            );
        }
        let (a, b) = if ca {
            code = MIRRORED[code];
            (b, a)
        } else {
            (a, b)
        };
        self.op1(
            "llvm.icmp",
            &[a, b],
            t,
            &[("predicate", &format!("{code} : i64"))],
        )
    }

    /// Whether an `arith` extension (`extsi`, `extui`) made `v`.
    fn is_extension(&self, v: V) -> bool {
        self.defining_op(v)
            .is_some_and(|(_, name)| name == b"arith.extsi" || name == b"arith.extui")
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

    /// `c ? a : b`: `llvm.select` where MLIR's folder would leave
    /// `arith.select` alone, else folded here as it would fold it.
    pub fn select(&mut self, c: V, a: V, b: V) -> Result<V, CodegenError> {
        let t = self.type_of(a);
        if self.arith_only {
            return self.op1("arith.select", &[c, a, b], t, &[]);
        }
        if a.ptr == b.ptr {
            return Ok(a);
        }
        match self.known(c) {
            Some(0) => return Ok(b),
            Some(_) => return Ok(a),
            None => {}
        }
        // select(x == y, x, y) is y; select(x != y, x, y) is x.
        if let Some((pred @ (0 | 1), x, y)) = self.cmp_of(c) {
            if (x.ptr == a.ptr && y.ptr == b.ptr) || (x.ptr == b.ptr && y.ptr == a.ptr) {
                return Ok(if pred == 1 { a } else { b });
            }
        }
        let consts = self.known_or_placeholder(a) && self.known_or_placeholder(b);
        if self.is_placeholder(c) || (consts && t == self.ty("i1")) {
            return self.op1("arith.select", &[c, a, b], t, &[]);
        }
        self.op1("llvm.select", &[c, a, b], t, &[])
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
