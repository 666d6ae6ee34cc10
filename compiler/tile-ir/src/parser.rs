//! Reads the text form of TIR back: exactly what [`print_kernel`](crate::print_kernel)
//! prints, so `print(parse(print(k))) == print(k)` for every kernel.
//!
//! The text carries everything a [`Kernel`] holds except source spans: every
//! instruction parsed gets `Span::default()` (synthetic). A `for`'s induction
//! variable takes the type of its lower bound (the verifier requires that);
//! value numbers that no parameter, block argument or result defines (the
//! checker leaves such gaps before `renumber`) get a placeholder `i1` type in
//! [`Kernel::values`] and are never referred to.
//!
//! One instruction per line; errors carry the line and column (1-based) of the
//! offending token. Parsing never panics, whatever the input.

use crate::{
    BinaryOp, Block, CmpOp, Const, Elem, Inst, Kernel, Op, Param, ReduceOp, Scalar, Span, Type,
    UnaryOp, ValueId,
};
use std::collections::HashMap;
use std::fmt;

/// A syntax error in TIR text, at `line`:`column` (1-based, columns in characters).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Largest value number accepted (the value table is allocated up to it).
const MAX_VALUE: u32 = 1 << 24;
/// Deepest nesting of `for`/`if` bodies accepted (the parser recurses per level).
const MAX_DEPTH: usize = 200;

/// Parse one kernel printed by [`print_kernel`](crate::print_kernel).
pub fn parse_kernel(text: &str) -> Result<Kernel, ParseError> {
    let toks = lex(text)?;
    let mut p = Parser {
        toks,
        pos: 0,
        types: HashMap::new(),
        uses: Vec::new(),
        depth: 0,
    };
    p.kernel()
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Value(u32),
    Int(i64),
    Float(f64),
    Punct(&'static str),
    Newline,
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Value(v) => write!(f, "`%{v}`"),
            Tok::Int(v) => write!(f, "`{v}`"),
            Tok::Float(v) => write!(f, "`{v:?}`"),
            Tok::Punct(p) => write!(f, "`{p}`"),
            Tok::Newline => write!(f, "end of line"),
            Tok::Eof => write!(f, "end of input"),
        }
    }
}

struct Token {
    tok: Tok,
    line: u32,
    column: u32,
}

fn err<T>(line: u32, column: u32, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        column,
        message: message.into(),
    })
}

const PUNCT: [&str; 12] = ["..", "<", ">", "(", ")", "{", "}", "[", "]", ",", ":", "="];

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    while i < chars.len() {
        let c = chars[i];
        let (l, cl) = (line, col);
        let start = i;
        let tok = if c == '\n' {
            i += 1;
            line += 1;
            col = 1;
            out.push(Token {
                tok: Tok::Newline,
                line: l,
                column: cl,
            });
            continue;
        } else if c.is_whitespace() {
            i += 1;
            col += 1;
            continue;
        } else if c == '%' {
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let digits: String = chars[start + 1..i].iter().collect();
            match digits.parse::<u32>() {
                Ok(v) if v <= MAX_VALUE => Tok::Value(v),
                Ok(_) | Err(_) if !digits.is_empty() => {
                    return err(l, cl, format!("value number %{digits} is too large"))
                }
                _ => return err(l, cl, "expected a value number after `%`"),
            }
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let mut float = false;
            // A fraction, but not the `..` of a range.
            if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                float = true;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if matches!(chars.get(i), Some('e' | 'E')) {
                let mut j = i + 1;
                if matches!(chars.get(j), Some('+' | '-')) {
                    j += 1;
                }
                if chars.get(j).is_some_and(|d| d.is_ascii_digit()) {
                    float = true;
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let s: String = chars[start..i].iter().collect();
            if float {
                match s.parse::<f64>() {
                    Ok(v) => Tok::Float(v),
                    Err(_) => return err(l, cl, format!("bad number `{s}`")),
                }
            } else {
                match s.parse::<i64>() {
                    Ok(v) => Tok::Int(v),
                    Err(_) => return err(l, cl, format!("integer `{s}` out of range")),
                }
            }
        } else if c == '-' && chars[i + 1..].starts_with(&['i', 'n', 'f']) {
            i += 4;
            Tok::Float(f64::NEG_INFINITY)
        } else if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            Tok::Ident(chars[start..i].iter().collect())
        } else if c == '*' {
            i += 1;
            Tok::Punct("*")
        } else if let Some(p) = PUNCT.iter().find(|p| {
            p.chars()
                .enumerate()
                .all(|(k, pc)| chars.get(i + k) == Some(&pc))
        }) {
            i += p.chars().count();
            Tok::Punct(p)
        } else {
            return err(l, cl, format!("unexpected character `{c}`"));
        };
        col += (i - start) as u32;
        out.push(Token {
            tok,
            line: l,
            column: cl,
        });
    }
    out.push(Token {
        tok: Tok::Eof,
        line,
        column: col,
    });
    Ok(out)
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    /// Type of every value defined so far.
    types: HashMap<u32, Type>,
    /// Every use, with where it is, to report the first undefined one.
    uses: Vec<(u32, u32, u32)>,
    depth: usize,
}

type PResult<T> = Result<T, ParseError>;

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map(|t| &t.tok).unwrap_or(&Tok::Eof)
    }

    fn here(&self) -> (u32, u32) {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map(|t| (t.line, t.column))
            .unwrap_or((1, 1))
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn fail<T>(&self, message: impl Into<String>) -> PResult<T> {
        let (l, c) = self.here();
        err(l, c, message)
    }

    fn expected<T>(&self, what: &str) -> PResult<T> {
        self.fail(format!("expected {what}, found {}", self.peek()))
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == w)
    }

    fn punct(&mut self, p: &str) -> PResult<()> {
        if self.is_punct(p) {
            self.bump();
            Ok(())
        } else {
            self.expected(&format!("`{p}`"))
        }
    }

    fn word(&mut self, w: &str) -> PResult<()> {
        if self.is_word(w) {
            self.bump();
            Ok(())
        } else {
            self.expected(&format!("`{w}`"))
        }
    }

    fn ident(&mut self, what: &str) -> PResult<String> {
        match self.peek() {
            Tok::Ident(s) => {
                let s = s.clone();
                self.bump();
                Ok(s)
            }
            _ => self.expected(what),
        }
    }

    fn int(&mut self) -> PResult<i64> {
        match self.peek() {
            Tok::Int(v) => {
                let v = *v;
                self.bump();
                Ok(v)
            }
            _ => self.expected("an integer"),
        }
    }

    fn small<T: TryFrom<i64>>(&mut self, what: &str) -> PResult<T> {
        let here = self.here();
        let v = self.int()?;
        T::try_from(v).or_else(|_| err(here.0, here.1, format!("{what} {v} is out of range")))
    }

    fn newline(&mut self) -> PResult<()> {
        match self.peek() {
            Tok::Newline => {
                self.skip_newlines();
                Ok(())
            }
            Tok::Eof => Ok(()),
            _ => self.expected("end of line"),
        }
    }

    fn skip_newlines(&mut self) {
        while *self.peek() == Tok::Newline {
            self.bump();
        }
    }

    /// A value being used (it must be defined somewhere in the kernel).
    fn use_value(&mut self) -> PResult<ValueId> {
        let (l, c) = self.here();
        match self.peek() {
            Tok::Value(v) => {
                let v = *v;
                self.bump();
                self.uses.push((v, l, c));
                Ok(ValueId(v))
            }
            _ => self.expected("a value (`%N`)"),
        }
    }

    /// A value token that is about to be defined (its type comes later).
    fn def_value(&mut self) -> PResult<(ValueId, (u32, u32))> {
        let here = self.here();
        match self.peek() {
            Tok::Value(v) => {
                let v = *v;
                self.bump();
                Ok((ValueId(v), here))
            }
            _ => self.expected("a value (`%N`)"),
        }
    }

    fn define(&mut self, v: ValueId, at: (u32, u32), ty: Type) -> PResult<()> {
        match self.types.get(&v.0) {
            Some(old) if *old != ty => err(
                at.0,
                at.1,
                format!("{v} is defined again with type {ty} (was {old})"),
            ),
            _ => {
                self.types.insert(v.0, ty);
                Ok(())
            }
        }
    }

    fn scalar(&mut self) -> PResult<Scalar> {
        let here = self.here();
        let name = self.ident("an element type")?;
        Scalar::from_name(&name)
            .filter(|s| s.name() == name)
            .map_or_else(|| err(here.0, here.1, format!("unknown type `{name}`")), Ok)
    }

    fn ty(&mut self) -> PResult<Type> {
        let elem = if self.is_punct("*") {
            self.bump();
            Elem::Ptr(self.scalar()?)
        } else {
            Elem::Scalar(self.scalar()?)
        };
        let mut shape = Vec::new();
        if self.is_punct("[") {
            self.bump();
            loop {
                shape.push(self.small::<u32>("dimension")?);
                if self.is_punct(",") {
                    self.bump();
                } else {
                    break;
                }
            }
            self.punct("]")?;
        }
        Ok(Type { elem, shape })
    }

    fn kernel(&mut self) -> PResult<Kernel> {
        self.skip_newlines();
        self.word("kernel")?;
        let name = self.ident("the kernel name")?;
        let mut meta = Vec::new();
        if self.is_punct("<") {
            self.bump();
            loop {
                let n = self.ident("a meta-parameter name")?;
                self.punct("=")?;
                meta.push((n, self.int()?));
                if self.is_punct(",") {
                    self.bump();
                } else {
                    break;
                }
            }
            self.punct(">")?;
        }
        self.punct("(")?;
        let mut params = Vec::new();
        if !self.is_punct(")") {
            loop {
                let (v, at) = self.def_value()?;
                let pname = self.ident("a parameter name")?;
                self.punct(":")?;
                let ty = self.ty()?;
                self.define(v, at, ty.clone())?;
                params.push(Param {
                    name: pname,
                    value: v,
                    ty,
                });
                if self.is_punct(",") {
                    self.bump();
                } else {
                    break;
                }
            }
        }
        self.punct(")")?;
        self.punct("{")?;
        self.newline()?;
        let insts = self.insts()?;
        self.punct("}")?;
        self.newline()?;
        if *self.peek() != Tok::Eof {
            return self.expected("end of input after the kernel");
        }
        for &(v, l, c) in &self.uses {
            if !self.types.contains_key(&v) {
                return err(l, c, format!("%{v} is never defined"));
            }
        }
        let n = self.types.keys().max().map_or(0, |m| *m as usize + 1);
        let mut values = vec![Type::scalar(Scalar::I1); n];
        for (v, t) in std::mem::take(&mut self.types) {
            values[v as usize] = t;
        }
        Ok(Kernel {
            name,
            params,
            meta,
            body: Block {
                args: vec![],
                insts,
            },
            values,
        })
    }

    /// Instructions up to (not including) the closing `}` of their block.
    fn insts(&mut self) -> PResult<Vec<Inst>> {
        if self.depth >= MAX_DEPTH {
            return self.fail(format!("blocks nested more than {MAX_DEPTH} deep"));
        }
        self.depth += 1;
        let mut out = Vec::new();
        while !self.is_punct("}") {
            if *self.peek() == Tok::Eof {
                return self.expected("`}`");
            }
            out.push(self.inst()?);
            self.newline()?;
        }
        self.depth -= 1;
        Ok(out)
    }

    fn inst(&mut self) -> PResult<Inst> {
        let mut results = Vec::new();
        if matches!(self.peek(), Tok::Value(_)) {
            loop {
                results.push(self.def_value()?);
                if self.is_punct(",") {
                    self.bump();
                } else {
                    break;
                }
            }
            self.punct("=")?;
        }
        let op_at = self.here();
        let name = self.ident("an operation")?;
        let op = match name.as_str() {
            "for" => return self.for_inst(results),
            "if" => return self.if_inst(results),
            _ => self.simple_op(&name, op_at)?,
        };
        self.result_types(&results)?;
        Ok(inst(results, op))
    }

    /// ` : t1, t2` for the results (nothing when there are none).
    fn result_types(&mut self, results: &[(ValueId, (u32, u32))]) -> PResult<()> {
        if results.is_empty() {
            return Ok(());
        }
        self.punct(":")?;
        for (i, (v, at)) in results.iter().enumerate() {
            if i > 0 {
                self.punct(",")?;
            }
            let t = self.ty()?;
            self.define(*v, *at, t)?;
        }
        Ok(())
    }

    /// `, name %v` if present.
    fn opt(&mut self, name: &str) -> PResult<Option<ValueId>> {
        if self.is_punct(",")
            && matches!(self.toks.get(self.pos + 1), Some(Token { tok: Tok::Ident(s), .. }) if s == name)
        {
            self.bump();
            self.bump();
            return Ok(Some(self.use_value()?));
        }
        Ok(None)
    }

    fn comma_value(&mut self) -> PResult<ValueId> {
        self.punct(",")?;
        self.use_value()
    }

    fn simple_op(&mut self, name: &str, at: (u32, u32)) -> PResult<Op> {
        if let Some(op) = unary_op(name) {
            return Ok(Op::Unary(op, self.use_value()?));
        }
        if let Some(op) = binary_op(name) {
            let a = self.use_value()?;
            return Ok(Op::Binary(op, a, self.comma_value()?));
        }
        Ok(match name {
            "const" => Op::Const(self.constant()?),
            "program_id" => Op::ProgramId(self.small("grid axis")?),
            "num_programs" => Op::NumPrograms(self.small("grid axis")?),
            "arange" => {
                let start = self.int()?;
                self.punct("..")?;
                Op::Arange {
                    start,
                    end: self.int()?,
                }
            }
            "splat" => Op::Splat(self.use_value()?),
            "expand_dims" => {
                let value = self.use_value()?;
                self.punct(",")?;
                self.word("axis")?;
                Op::ExpandDims {
                    value,
                    axis: self.small("axis")?,
                }
            }
            "broadcast" => Op::Broadcast(self.use_value()?),
            "reshape" => Op::Reshape(self.use_value()?),
            "trans" => {
                let value = self.use_value()?;
                self.punct(",")?;
                self.word("perm")?;
                self.punct("[")?;
                let mut perm = Vec::new();
                while !self.is_punct("]") {
                    if !perm.is_empty() {
                        self.punct(",")?;
                    }
                    perm.push(self.small("permutation entry")?);
                }
                self.punct("]")?;
                Op::Trans { value, perm }
            }
            "cmp" => {
                let here = self.here();
                let w = self.ident("a comparison")?;
                let Some(op) = cmp_op(&w) else {
                    return err(here.0, here.1, format!("unknown comparison `{w}`"));
                };
                let a = self.use_value()?;
                Op::Cmp(op, a, self.comma_value()?)
            }
            "select" => {
                let cond = self.use_value()?;
                let a = self.comma_value()?;
                Op::Select {
                    cond,
                    a,
                    b: self.comma_value()?,
                }
            }
            "fma" => {
                let a = self.use_value()?;
                let b = self.comma_value()?;
                Op::Fma {
                    a,
                    b,
                    c: self.comma_value()?,
                }
            }
            "cast" => Op::Cast(self.use_value()?),
            "addptr" => {
                let ptr = self.use_value()?;
                Op::AddPtr {
                    ptr,
                    offset: self.comma_value()?,
                }
            }
            "load" => {
                let ptr = self.use_value()?;
                let mask = self.opt("mask")?;
                let other = self.opt("other")?;
                Op::Load { ptr, mask, other }
            }
            "store" | "atomic_add" => {
                let ptr = self.use_value()?;
                let value = self.comma_value()?;
                let mask = self.opt("mask")?;
                if name == "store" {
                    Op::Store { ptr, value, mask }
                } else {
                    Op::AtomicAdd { ptr, value, mask }
                }
            }
            "reduce" => {
                let here = self.here();
                let w = self.ident("a reduction")?;
                let op = match w.as_str() {
                    "sum" => ReduceOp::Sum,
                    "max" => ReduceOp::Max,
                    "min" => ReduceOp::Min,
                    _ => return err(here.0, here.1, format!("unknown reduction `{w}`")),
                };
                let value = self.use_value()?;
                self.punct(",")?;
                self.word("axis")?;
                Op::Reduce {
                    op,
                    value,
                    axis: self.small("axis")?,
                }
            }
            "dot" => {
                let a = self.use_value()?;
                let b = self.comma_value()?;
                Op::Dot {
                    a,
                    b,
                    acc: self.comma_value()?,
                }
            }
            "yield" => {
                let mut vs = Vec::new();
                if matches!(self.peek(), Tok::Value(_)) {
                    vs.push(self.use_value()?);
                    while self.is_punct(",") {
                        vs.push(self.comma_value()?);
                    }
                }
                Op::Yield(vs)
            }
            _ => return err(at.0, at.1, format!("unknown operation `{name}`")),
        })
    }

    fn constant(&mut self) -> PResult<Const> {
        let c = match self.peek() {
            Tok::Int(v) => Const::Int(*v),
            Tok::Float(v) => Const::Float(*v),
            Tok::Ident(s) => match s.as_str() {
                "true" => Const::Bool(true),
                "false" => Const::Bool(false),
                "inf" => Const::Float(f64::INFINITY),
                "NaN" => Const::Float(f64::NAN),
                _ => return self.expected("a constant"),
            },
            _ => return self.expected("a constant"),
        };
        self.bump();
        Ok(c)
    }

    /// `for[ static] %iv = %lb to %ub step %s[ iter_args(%a: t = %i, …)][ : types] {`
    fn for_inst(&mut self, results: Vec<(ValueId, (u32, u32))>) -> PResult<Inst> {
        let unroll = self.is_word("static");
        if unroll {
            self.bump();
        }
        let (iv, iv_at) = self.def_value()?;
        self.punct("=")?;
        let lb = self.use_value()?;
        self.word("to")?;
        let ub = self.use_value()?;
        self.word("step")?;
        let step = self.use_value()?;
        // The induction variable has the bounds' type (a verifier rule).
        let Some(it) = self.types.get(&lb.0).cloned() else {
            return err(
                iv_at.0,
                iv_at.1,
                format!("the lower bound {lb} must be defined before the loop"),
            );
        };
        self.define(iv, iv_at, it)?;
        let mut args = vec![iv];
        let mut init = Vec::new();
        if self.is_word("iter_args") {
            self.bump();
            self.punct("(")?;
            loop {
                let (a, at) = self.def_value()?;
                self.punct(":")?;
                let t = self.ty()?;
                self.define(a, at, t)?;
                self.punct("=")?;
                args.push(a);
                init.push(self.use_value()?);
                if self.is_punct(",") {
                    self.bump();
                } else {
                    break;
                }
            }
            self.punct(")")?;
        }
        self.result_types(&results)?;
        self.punct("{")?;
        self.newline()?;
        let insts = self.insts()?;
        self.punct("}")?;
        Ok(inst(
            results,
            Op::For {
                lb,
                ub,
                step,
                init,
                body: Block { args, insts },
                unroll,
            },
        ))
    }

    /// `if %c[ : types] {` … `} else {` … `}`
    fn if_inst(&mut self, results: Vec<(ValueId, (u32, u32))>) -> PResult<Inst> {
        let cond = self.use_value()?;
        self.result_types(&results)?;
        self.punct("{")?;
        self.newline()?;
        let then_insts = self.insts()?;
        self.punct("}")?;
        self.word("else")?;
        self.punct("{")?;
        self.newline()?;
        let else_insts = self.insts()?;
        self.punct("}")?;
        Ok(inst(
            results,
            Op::If {
                cond,
                then_body: Block {
                    args: vec![],
                    insts: then_insts,
                },
                else_body: Block {
                    args: vec![],
                    insts: else_insts,
                },
            },
        ))
    }
}

fn inst(results: Vec<(ValueId, (u32, u32))>, op: Op) -> Inst {
    Inst {
        results: results.into_iter().map(|(v, _)| v).collect(),
        op,
        span: Span::default(),
    }
}

fn unary_op(name: &str) -> Option<UnaryOp> {
    Some(match name {
        "neg" => UnaryOp::Neg,
        "not" => UnaryOp::Not,
        "exp" => UnaryOp::Exp,
        "exp2" => UnaryOp::Exp2,
        "log" => UnaryOp::Log,
        "sqrt" => UnaryOp::Sqrt,
        "rsqrt" => UnaryOp::Rsqrt,
        "sigmoid" => UnaryOp::Sigmoid,
        "tanh" => UnaryOp::Tanh,
        "abs" => UnaryOp::Abs,
        "sin" => UnaryOp::Sin,
        "cos" => UnaryOp::Cos,
        "erf" => UnaryOp::Erf,
        "log1p" => UnaryOp::Log1p,
        "expm1" => UnaryOp::Expm1,
        _ => return None,
    })
}

fn binary_op(name: &str) -> Option<BinaryOp> {
    Some(match name {
        "add" => BinaryOp::Add,
        "sub" => BinaryOp::Sub,
        "mul" => BinaryOp::Mul,
        "div" => BinaryOp::Div,
        "rem" => BinaryOp::Rem,
        "max" => BinaryOp::Max,
        "min" => BinaryOp::Min,
        "and" => BinaryOp::And,
        "or" => BinaryOp::Or,
        "xor" => BinaryOp::Xor,
        "shl" => BinaryOp::Shl,
        "shr" => BinaryOp::Shr,
        "pow" => BinaryOp::Pow,
        _ => return None,
    })
}

fn cmp_op(name: &str) -> Option<CmpOp> {
    Some(match name {
        "eq" => CmpOp::Eq,
        "ne" => CmpOp::Ne,
        "lt" => CmpOp::Lt,
        "le" => CmpOp::Le,
        "gt" => CmpOp::Gt,
        "ge" => CmpOp::Ge,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{print_kernel, verify};

    const SAMPLE: &str = "\
kernel scale<BLOCK = 16, neg_one = -1>(%0 x: *f32, %1 y: *f32, %2 n: i32) {
  %3 = program_id 0 : i32
  %4 = const 16 : i32
  %5 = mul %3, %4 : i32
  %6 = arange 0..16 : i32[16]
  %7 = splat %5 : i32[16]
  %8 = add %7, %6 : i32[16]
  %9 = splat %2 : i32[16]
  %10 = cmp lt %8, %9 : i1[16]
  %11 = splat %0 : *f32[16]
  %12 = addptr %11, %8 : *f32[16]
  %13 = const -inf : f32
  %14 = splat %13 : f32[16]
  %15 = load %12, mask %10, other %14 : f32[16]
  %16 = const 0 : i32
  %17 = const 1 : i32
  %18 = const 0.5 : f32
  %19 = for %20 = %16 to %4 step %17 iter_args(%21: f32 = %18) : f32 {
    %22 = const true : i1
    %23 = if %22 : f32 {
      %24 = add %21, %18 : f32
      yield %24
    } else {
      yield %21
    }
    yield %23
  }
  %25 = splat %19 : f32[16]
  %26 = mul %15, %25 : f32[16]
  %27 = splat %1 : *f32[16]
  %28 = addptr %27, %8 : *f32[16]
  store %28, %26, mask %10
}
";

    #[test]
    fn sample_round_trips_and_verifies() {
        let k = parse_kernel(SAMPLE).expect("parses");
        assert_eq!(print_kernel(&k), SAMPLE);
        verify(&k).expect("verifies");
        assert_eq!(k.meta, vec![("BLOCK".into(), 16), ("neg_one".into(), -1)]);
        assert_eq!(k.values.len(), 29);
    }

    fn error_of(text: &str) -> ParseError {
        parse_kernel(text).expect_err("must not parse")
    }

    #[test]
    fn bad_token_is_located() {
        let e = error_of("kernel k() {\n  %1 = const 1 : i32\n  %2 = add %1, $1 : i32\n}\n");
        assert_eq!((e.line, e.column), (3, 16));
        assert_eq!(e.message, "unexpected character `$`");
        assert_eq!(e.to_string(), "3:16: unexpected character `$`");
    }

    #[test]
    fn unknown_op_is_located() {
        let e = error_of("kernel k() {\n  %1 = const 1 : i32\n    %2 = frobnicate %1 : i32\n}\n");
        assert_eq!((e.line, e.column), (3, 10));
        assert_eq!(e.message, "unknown operation `frobnicate`");
    }

    #[test]
    fn other_errors() {
        let e = error_of("kernel k() {\n  %1 = const 1 : u8\n}\n");
        assert_eq!(
            (e.line, e.column, e.message.as_str()),
            (2, 18, "unknown type `u8`")
        );
        let e = error_of("kernel k() {\n  %1 = neg %7 : i32\n}\n");
        assert_eq!(
            (e.line, e.column, e.message.as_str()),
            (2, 12, "%7 is never defined")
        );
        let e = error_of("kernel k() {\n  %1 = const 1\n}\n");
        assert_eq!(
            (e.line, e.column, e.message.as_str()),
            (2, 15, "expected `:`, found end of line")
        );
        let e = error_of("kernel k() {\n  %1 = const 1 : i32 %2\n}\n");
        assert_eq!(e.message, "expected end of line, found `%2`");
        let e = error_of("kernel k() {\n  store %1, %1\n");
        assert_eq!(e.message, "expected `}`, found end of input");
        let e = error_of("kernel k<A = 99999999999999999999>() {\n}\n");
        assert_eq!((e.line, e.column), (1, 14));
        let e = error_of("kernel k() {\n  %1 = const 1 : i32[4294967296]\n}\n");
        assert_eq!(e.message, "dimension 4294967296 is out of range");
    }

    #[test]
    fn never_panics_on_prefixes_or_edits() {
        let chars: Vec<char> = SAMPLE.chars().collect();
        for n in 0..chars.len() {
            let prefix: String = chars[..n].iter().collect();
            let _ = parse_kernel(&prefix);
            // Drop one character, and replace one by a few troublesome ones.
            let mut dropped = chars.clone();
            dropped.remove(n);
            let _ = parse_kernel(&dropped.iter().collect::<String>());
            for c in ['%', '-', '.', '{', '}', '9', 'e', '\n'] {
                let mut edited = chars.clone();
                edited[n] = c;
                let _ = parse_kernel(&edited.iter().collect::<String>());
            }
        }
        let deep = format!("kernel k(%0 c: i1) {{\n{}", "  if %0 {\n".repeat(10_000));
        assert!(parse_kernel(&deep).is_err());
    }
}
