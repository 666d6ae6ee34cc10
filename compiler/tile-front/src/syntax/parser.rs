//! Parser: tokens → AST, with nom 8 combinators over a token slice.
//!
//! Recovery: a statement that fails to parse is reported and skipped up to its
//! `;` (or the end of its block), an item up to the next `kernel`/`fn`/`tune`,
//! so one run reports many errors. Nesting depth is bounded so no input can
//! overflow the stack.

use super::ast::*;
use super::lexer::{Tok, Token};
use crate::diag::{Code, Diagnostic};
use nom::error::{ErrorKind, ParseError};
use nom::multi::separated_list0;
use nom::{Err, IResult, Input, Needed, Parser};
use std::cell::{Cell, RefCell};
use tile_ir::Span;

/// Deepest nesting of expressions and blocks accepted (each level costs stack).
pub const MAX_DEPTH: u32 = 128;

/// The parser's input: a window on the token list (which always ends with `Eof`).
#[derive(Clone, Copy, Debug)]
pub struct Toks<'a> {
    all: &'a [Token],
    pos: usize,
    end: usize,
}

impl<'a> Toks<'a> {
    pub fn new(all: &'a [Token]) -> Toks<'a> {
        Toks {
            all,
            pos: 0,
            end: all.len(),
        }
    }
    /// The next token (`Eof` at the end).
    fn peek(&self) -> &'a Token {
        self.peek_at(0)
    }
    fn peek_at(&self, k: usize) -> &'a Token {
        let last = self.all.len() - 1;
        &self.all[(self.pos + k).min(self.end.saturating_sub(1)).min(last)]
    }
    fn bump(self) -> Toks<'a> {
        Toks {
            pos: (self.pos + 1).min(self.end),
            ..self
        }
    }
    /// End of the token before the current one (the end of what was consumed).
    fn prev_end(&self) -> u32 {
        if self.pos == 0 {
            0
        } else {
            self.all[self.pos - 1].span.end
        }
    }
    fn start(&self) -> u32 {
        self.peek().span.start
    }
}

impl<'a> Input for Toks<'a> {
    type Item = &'a Token;
    type Iter = std::slice::Iter<'a, Token>;
    type IterIndices = std::iter::Enumerate<std::slice::Iter<'a, Token>>;

    fn input_len(&self) -> usize {
        self.end - self.pos
    }
    fn take(&self, index: usize) -> Self {
        Toks {
            end: self.pos + index,
            ..*self
        }
    }
    fn take_from(&self, index: usize) -> Self {
        Toks {
            pos: self.pos + index,
            ..*self
        }
    }
    fn take_split(&self, index: usize) -> (Self, Self) {
        (self.take_from(index), self.take(index))
    }
    fn position<P>(&self, predicate: P) -> Option<usize>
    where
        P: Fn(Self::Item) -> bool,
    {
        self.all[self.pos..self.end].iter().position(predicate)
    }
    fn iter_elements(&self) -> Self::Iter {
        self.all[self.pos..self.end].iter()
    }
    fn iter_indices(&self) -> Self::IterIndices {
        self.all[self.pos..self.end].iter().enumerate()
    }
    fn slice_index(&self, count: usize) -> Result<usize, Needed> {
        if self.input_len() >= count {
            Ok(count)
        } else {
            Err(Needed::new(count - self.input_len()))
        }
    }
}

/// What the parser expected (kept as static text: building messages is left
/// to [`PErr::into_diag`], so the many failed attempts of a parse cost little).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A token, shown in backticks.
    Token(&'static str),
    /// A description such as "an expression".
    Thing(&'static str),
}

impl Expect {
    fn text(self) -> String {
        match self {
            Expect::Token(t) => format!("`{t}`"),
            Expect::Thing(t) => t.to_string(),
        }
    }
}

/// A parse error: where, and what was expected there.
#[derive(Clone, Debug, PartialEq)]
pub struct PErr {
    pub span: Span,
    pub code: Code,
    pub expected: Vec<Expect>,
    /// Index of the token found instead (in the parsed token list).
    pub found_at: usize,
    pub message: Option<String>,
    /// Text under the caret (else "expected …").
    pub label: Option<&'static str>,
    pub hint: Option<String>,
}

impl PErr {
    fn expected(i: Toks<'_>, what: Expect) -> PErr {
        PErr {
            span: i.peek().span,
            code: Code::Syntax,
            expected: vec![what],
            found_at: i.pos,
            message: None,
            label: None,
            hint: None,
        }
    }
    fn custom(span: Span, code: Code, message: impl Into<String>, hint: Option<&str>) -> PErr {
        PErr {
            span,
            code,
            expected: vec![],
            found_at: 0,
            message: Some(message.into()),
            label: None,
            hint: hint.map(str::to_string),
        }
    }
    /// The diagnostic, with the found token described from `tokens`.
    pub fn into_diag(self, tokens: &[Token]) -> Diagnostic {
        let found = tokens
            .get(self.found_at)
            .map(|t| t.tok.describe())
            .unwrap_or_else(|| "end of file".into());
        let mut exp: Vec<String> = self.expected.iter().map(|e| e.text()).collect();
        exp.dedup();
        let message = match self.message {
            Some(m) => m,
            None => {
                let list = match exp.len() {
                    0 => "something else".to_string(),
                    1 => exp[0].clone(),
                    n => format!("{} or {}", exp[..n - 1].join(", "), exp[n - 1]),
                };
                format!("expected {list}, found {found}")
            }
        };
        let mut d = Diagnostic::new(self.code, message, self.span);
        if let Some(l) = self.label {
            d = d.with_label(l);
        } else if let Some(first) = exp.first() {
            d = d.with_label(format!("expected {first}"));
        }
        if let Some(h) = self.hint {
            d = d.with_hint(h);
        }
        d
    }
}

impl<'a> ParseError<Toks<'a>> for PErr {
    fn from_error_kind(input: Toks<'a>, _kind: ErrorKind) -> Self {
        PErr::expected(input, Expect::Thing("more input"))
    }
    fn append(_input: Toks<'a>, _kind: ErrorKind, other: Self) -> Self {
        other
    }
    /// Keep the error that got furthest; merge what was expected on a tie.
    fn or(self, other: Self) -> Self {
        match self.span.start.cmp(&other.span.start) {
            std::cmp::Ordering::Greater => self,
            std::cmp::Ordering::Less => other,
            std::cmp::Ordering::Equal => {
                let mut m = other;
                m.expected.extend(self.expected);
                m
            }
        }
    }
}

type PResult<'a, T> = IResult<Toks<'a>, T, PErr>;

fn fail<T>(e: PErr) -> Result<T, Err<PErr>> {
    Err(Err::Error(e))
}

/// Make an error final: no enclosing alternative (such as the argument list
/// around a call that is itself an argument) backtracks past it.
fn cut(e: Err<PErr>) -> Err<PErr> {
    match e {
        Err::Error(e) => Err::Failure(e),
        other => other,
    }
}

/// `**` at `at`: Python's power operator.
fn power_operator(at: Span) -> PErr {
    PErr {
        label: Some("not an operator"),
        ..PErr::custom(
            at,
            Code::Syntax,
            "there is no `**` operator",
            Some("there is no power operator; use `pow(a, b)` (or `x * x` for a square)"),
        )
    }
}

/// `name=` at `at` in an argument list: a keyword argument.
fn keyword_argument(name: &str, at: Span) -> PErr {
    let hint = format!(
        "arguments are positional: drop `{name}=` and pass the value in its place, e.g. `sum(v, 1)`"
    );
    PErr {
        label: Some("keyword argument"),
        ..PErr::custom(
            at,
            Code::Syntax,
            format!("keyword arguments are not supported: `{name}=`"),
            Some(&hint),
        )
    }
}

/// Match one exact token.
fn tok<'a>(t: Tok) -> impl Fn(Toks<'a>) -> PResult<'a, Span> {
    move |i: Toks<'a>| {
        let next = i.peek();
        if next.tok == t {
            Ok((i.bump(), next.span))
        } else {
            fail(PErr::expected(i, Expect::Token(t.text())))
        }
    }
}

/// A statement's `;`; when missing, the error points just after the statement
/// (where the `;` belongs), like rustc.
fn semi(i: Toks<'_>) -> PResult<'_, Span> {
    tok(Tok::Semi)(i).map_err(|e| {
        e.map(|mut e| {
            let at = i.prev_end();
            e.span = Span { start: at, end: at };
            e
        })
    })
}

fn ident(i: Toks<'_>) -> PResult<'_, Ident> {
    match &i.peek().tok {
        Tok::Ident(name) => Ok((
            i.bump(),
            Ident {
                name: name.clone(),
                span: i.peek().span,
            },
        )),
        _ => fail(PErr::expected(i, Expect::Thing("an identifier"))),
    }
}

/// `*f32` or `i32`.
fn type_expr(i: Toks<'_>) -> PResult<'_, TypeExpr> {
    let start = i.start();
    let (i, star) = nom::combinator::opt(tok(Tok::Star)).parse(i)?;
    let (i, name) = ident(i).map_err(|e| {
        e.map(|mut e| {
            e.expected = vec![Expect::Thing("a type")];
            e
        })
    })?;
    Ok((
        i,
        TypeExpr {
            ptr: star.is_some(),
            name,
            span: Span {
                start,
                end: i.prev_end(),
            },
        },
    ))
}

/// Binding power of binary operators (higher binds tighter).
fn binop(t: &Tok) -> Option<(BinOp, u8)> {
    Some(match t {
        Tok::PipePipe => (BinOp::Or, 1),
        Tok::AmpAmp => (BinOp::And, 2),
        Tok::EqEq => (BinOp::Eq, 3),
        Tok::Ne => (BinOp::Ne, 3),
        Tok::Lt => (BinOp::Lt, 3),
        Tok::Le => (BinOp::Le, 3),
        Tok::Gt => (BinOp::Gt, 3),
        Tok::Ge => (BinOp::Ge, 3),
        Tok::Pipe => (BinOp::BitOr, 4),
        Tok::Caret => (BinOp::BitXor, 5),
        Tok::Amp => (BinOp::BitAnd, 6),
        Tok::Shl => (BinOp::Shl, 7),
        Tok::Shr => (BinOp::Shr, 7),
        Tok::Plus => (BinOp::Add, 8),
        Tok::Minus => (BinOp::Sub, 8),
        Tok::Star => (BinOp::Mul, 9),
        Tok::Slash => (BinOp::Div, 9),
        Tok::Percent => (BinOp::Rem, 9),
        _ => return None,
    })
}

const AS_POWER: u8 = 10;

fn assign_op(t: &Tok) -> Option<Option<BinOp>> {
    Some(match t {
        Tok::Eq => None,
        Tok::PlusEq => Some(BinOp::Add),
        Tok::MinusEq => Some(BinOp::Sub),
        Tok::StarEq => Some(BinOp::Mul),
        Tok::SlashEq => Some(BinOp::Div),
        Tok::PercentEq => Some(BinOp::Rem),
        _ => return None,
    })
}

/// Parser state: diagnostics from recovered errors and the nesting depth.
struct P {
    diags: RefCell<Vec<Diagnostic>>,
    depth: Cell<u32>,
}

impl P {
    /// Run `f` one nesting level deeper, failing cleanly past [`MAX_DEPTH`].
    fn nested<'a, T>(
        &self,
        i: Toks<'a>,
        f: impl FnOnce(Toks<'a>) -> PResult<'a, T>,
    ) -> PResult<'a, T> {
        if self.depth.get() >= MAX_DEPTH {
            return Err(Err::Failure(PErr::custom(
                i.peek().span,
                Code::TooDeep,
                format!("nesting deeper than {MAX_DEPTH} levels"),
                Some("split the expression with `let` bindings"),
            )));
        }
        let saved = self.depth.get();
        self.depth.set(saved + 1);
        let r = f(i);
        self.depth.set(saved);
        r
    }

    /// One more level inside the current [`P::nested`] call (operator chains nest
    /// the tree on the left without recursing here).
    fn deeper(&self, i: Toks<'_>) -> Result<(), Err<PErr>> {
        if self.depth.get() >= MAX_DEPTH {
            return Err(Err::Failure(PErr::custom(
                i.peek().span,
                Code::TooDeep,
                format!("expression nested deeper than {MAX_DEPTH} levels"),
                Some("split the expression with `let` bindings"),
            )));
        }
        self.depth.set(self.depth.get() + 1);
        Ok(())
    }

    fn module(&self, mut i: Toks<'_>) -> Module {
        let mut items = Vec::new();
        loop {
            match i.peek().tok {
                Tok::Eof => break,
                Tok::Kernel | Tok::Fn | Tok::Tune => {
                    let start = i;
                    match self.item(i) {
                        Ok((r, it)) => {
                            items.push(it);
                            i = r;
                        }
                        Err(Err::Error(e) | Err::Failure(e)) => {
                            self.diags.borrow_mut().push(e.into_diag(i.all));
                            i = skip_item(start.bump());
                        }
                        Err(Err::Incomplete(_)) => break,
                    }
                }
                _ => {
                    let mut e = PErr::expected(i, Expect::Thing("`kernel`, `fn` or `tune`"));
                    e.hint = Some("a file holds kernels, helper functions and tune blocks".into());
                    self.diags.borrow_mut().push(e.into_diag(i.all));
                    i = skip_item(i.bump());
                }
            }
        }
        Module { items }
    }

    fn item<'a>(&self, i: Toks<'a>) -> PResult<'a, Item> {
        match i.peek().tok {
            Tok::Kernel => self.kernel(i).map(|(r, k)| (r, Item::Kernel(k))),
            Tok::Fn => self.function(i).map(|(r, f)| (r, Item::Fn(f))),
            _ => self.tune(i).map(|(r, t)| (r, Item::Tune(t))),
        }
    }

    fn kernel<'a>(&self, i: Toks<'a>) -> PResult<'a, KernelDef> {
        let start = i.start();
        let (i, _) = tok(Tok::Kernel)(i)?;
        let (i, name) = ident(i)?;
        let (i, metas) = if i.peek().tok == Tok::Lt {
            let (i, _) = tok(Tok::Lt)(i)?;
            let (i, metas) = separated_list0(tok(Tok::Comma), |i| self.meta(i)).parse(i)?;
            let (i, _) = nom::combinator::opt(tok(Tok::Comma)).parse(i)?;
            let (i, _) = tok(Tok::Gt)(i)?;
            (i, metas)
        } else {
            (i, vec![])
        };
        let (i, params) = self.params(i, true)?;
        let (i, body) = self.block(i)?;
        Ok((
            i,
            KernelDef {
                name,
                metas,
                params,
                body,
                span: Span {
                    start,
                    end: i.prev_end(),
                },
            },
        ))
    }

    fn meta<'a>(&self, i: Toks<'a>) -> PResult<'a, MetaParam> {
        let start = i.start();
        let (i, _) = tok(Tok::Const)(i)?;
        let (i, name) = ident(i)?;
        let (i, _) = tok(Tok::Colon)(i)?;
        let (i, ty) = type_expr(i)?;
        let (i, default) = if i.peek().tok == Tok::Eq {
            // The default is a primary (a literal or `-literal`): a full
            // expression would swallow the closing `>`.
            let (i, _) = tok(Tok::Eq)(i)?;
            let (i, e) = self.unary(i)?;
            (i, Some(e))
        } else {
            (i, None)
        };
        Ok((
            i,
            MetaParam {
                name,
                ty,
                default,
                span: Span {
                    start,
                    end: i.prev_end(),
                },
            },
        ))
    }

    fn params<'a>(&self, i: Toks<'a>, typed: bool) -> PResult<'a, Vec<ParamDecl>> {
        let (i, _) = tok(Tok::LParen)(i)?;
        let param = |i: Toks<'a>| -> PResult<'a, ParamDecl> {
            let start = i.start();
            let (i, name) = ident(i)?;
            let (i, ty) = if typed || i.peek().tok == Tok::Colon {
                let (i, _) = tok(Tok::Colon)(i)?;
                let (i, t) = type_expr(i)?;
                (i, Some(t))
            } else {
                (i, None)
            };
            Ok((
                i,
                ParamDecl {
                    name,
                    ty,
                    span: Span {
                        start,
                        end: i.prev_end(),
                    },
                },
            ))
        };
        let (i, ps) = separated_list0(tok(Tok::Comma), param).parse(i)?;
        let (i, _) = nom::combinator::opt(tok(Tok::Comma)).parse(i)?;
        let (i, _) = tok(Tok::RParen)(i)?;
        Ok((i, ps))
    }

    fn function<'a>(&self, i: Toks<'a>) -> PResult<'a, FnDef> {
        let start = i.start();
        let (i, _) = tok(Tok::Fn)(i)?;
        let (i, name) = ident(i)?;
        let (i, params) = self.params(i, false)?;
        let (i, ret) = if i.peek().tok == Tok::Arrow {
            let (i, _) = tok(Tok::Arrow)(i)?;
            let (i, t) = type_expr(i)?;
            (i, Some(t))
        } else {
            (i, None)
        };
        let (i, body) = self.block(i)?;
        Ok((
            i,
            FnDef {
                name,
                params,
                ret,
                body,
                span: Span {
                    start,
                    end: i.prev_end(),
                },
            },
        ))
    }

    fn tune<'a>(&self, i: Toks<'a>) -> PResult<'a, TuneDef> {
        let start = i.start();
        let (i, _) = tok(Tok::Tune)(i)?;
        let (i, kernel) = ident(i)?;
        let (i, _) = tok(Tok::LBrace)(i)?;
        let value = |i: Toks<'a>| -> PResult<'a, TuneValue> {
            let t = i.peek();
            match &t.tok {
                Tok::Int(v) => Ok((i.bump(), TuneValue::Int(*v, t.span))),
                Tok::Minus => match i.bump().peek().tok {
                    Tok::Int(v) => {
                        let sp = Span {
                            start: t.span.start,
                            end: i.bump().peek().span.end,
                        };
                        Ok((i.bump().bump(), TuneValue::Int(v.wrapping_neg(), sp)))
                    }
                    _ => fail(PErr::expected(i.bump(), Expect::Thing("an integer"))),
                },
                Tok::Ident(_) => ident(i).map(|(r, id)| (r, TuneValue::Name(id))),
                _ => fail(PErr::expected(
                    i,
                    Expect::Thing("an integer or a parameter name"),
                )),
            }
        };
        let entry = |i: Toks<'a>| -> PResult<'a, TuneEntry> {
            let start = i.start();
            let (i, name) = ident(i)?;
            let (i, _) = tok(Tok::Colon)(i)?;
            let (i, _) = tok(Tok::LBracket)(i)?;
            // `grid: [cdiv(M, BM), N]` and `where: [BC == 128 * warps]` hold
            // expressions; the other entries numbers or names.
            let (i, values) = if name.name == "grid" || name.name == "where" {
                let grid_value = |i: Toks<'a>| self.expr(i).map(|(r, e)| (r, TuneValue::Expr(e)));
                separated_list0(tok(Tok::Comma), grid_value).parse(i)?
            } else {
                separated_list0(tok(Tok::Comma), value).parse(i)?
            };
            let (i, _) = nom::combinator::opt(tok(Tok::Comma)).parse(i)?;
            let (i, _) = tok(Tok::RBracket)(i)?;
            Ok((
                i,
                TuneEntry {
                    name,
                    values,
                    span: Span {
                        start,
                        end: i.prev_end(),
                    },
                },
            ))
        };
        let (i, entries) = separated_list0(tok(Tok::Comma), entry).parse(i)?;
        let (i, _) = nom::combinator::opt(tok(Tok::Comma)).parse(i)?;
        let (i, _) = tok(Tok::RBrace)(i)?;
        Ok((
            i,
            TuneDef {
                kernel,
                entries,
                span: Span {
                    start,
                    end: i.prev_end(),
                },
            },
        ))
    }

    /// `{ stmt* tail? }`, recovering from errors inside at statement level.
    fn block<'a>(&self, i: Toks<'a>) -> PResult<'a, Block> {
        self.nested(i, |i| {
            let start = i.start();
            let (mut i, _) = tok(Tok::LBrace)(i)?;
            let mut stmts = Vec::new();
            let mut tail = None;
            loop {
                match i.peek().tok {
                    Tok::RBrace => break,
                    // An item keyword cannot start a statement: the block was not closed.
                    Tok::Eof | Tok::Kernel | Tok::Fn | Tok::Tune => {
                        return fail(PErr::expected(i, Expect::Token("}")))
                    }
                    Tok::Semi => {
                        i = i.bump();
                        continue;
                    }
                    _ => {}
                }
                let stmt_start = i;
                match self.stmt(i) {
                    Ok((r, StmtOrTail::Stmt(s))) => {
                        stmts.push(*s);
                        i = r;
                    }
                    Ok((r, StmtOrTail::Tail(e))) => {
                        tail = Some(Box::new(e));
                        i = r;
                        if i.peek().tok != Tok::RBrace {
                            return fail(PErr::expected(i, Expect::Token("}")));
                        }
                    }
                    Err(Err::Failure(e)) if e.code == Code::TooDeep => return Err(Err::Failure(e)),
                    Err(Err::Error(e) | Err::Failure(e)) => {
                        self.diags.borrow_mut().push(e.into_diag(i.all));
                        let r = skip_stmt(stmt_start);
                        stmts.push(Stmt {
                            kind: StmtKind::Error,
                            span: Span {
                                start: stmt_start.start(),
                                end: r.prev_end(),
                            },
                        });
                        i = r;
                    }
                    Err(Err::Incomplete(_)) => return fail(PErr::expected(i, Expect::Token("}"))),
                }
            }
            let (i, _) = tok(Tok::RBrace)(i)?;
            Ok((
                i,
                Block {
                    stmts,
                    tail,
                    span: Span {
                        start,
                        end: i.prev_end(),
                    },
                },
            ))
        })
    }

    fn stmt<'a>(&self, i: Toks<'a>) -> PResult<'a, StmtOrTail> {
        let start = i.start();
        let done = |i: Toks<'a>, kind| {
            Ok((
                i,
                StmtOrTail::Stmt(Box::new(Stmt {
                    kind,
                    span: Span {
                        start,
                        end: i.prev_end(),
                    },
                })),
            ))
        };
        match &i.peek().tok {
            Tok::Let => {
                let i = i.bump();
                let (i, mutable) = nom::combinator::opt(tok(Tok::Mut)).parse(i)?;
                let (i, name) = ident(i)?;
                let (i, ty) = if i.peek().tok == Tok::Colon {
                    let (i, _) = tok(Tok::Colon)(i)?;
                    let (i, t) = type_expr(i)?;
                    (i, Some(t))
                } else {
                    (i, None)
                };
                let (i, _) = tok(Tok::Eq)(i)?;
                let (i, init) = self.expr(i)?;
                let (i, _) = semi(i)?;
                done(
                    i,
                    StmtKind::Let {
                        mutable: mutable.is_some(),
                        name,
                        ty,
                        init,
                    },
                )
            }
            Tok::For => {
                let i = i.bump();
                let (i, var) = ident(i)?;
                let (i, _) = tok(Tok::In)(i)?;
                let (i, st) = nom::combinator::opt(tok(Tok::Static)).parse(i)?;
                let (i, lo) = self.expr(i)?;
                let (i, _) = tok(Tok::DotDot)(i)?;
                let (i, hi) = self.expr(i)?;
                let (i, step) = if i.peek().tok == Tok::Step {
                    let (i, s) = self.expr(i.bump())?;
                    (i, Some(s))
                } else {
                    (i, None)
                };
                let (i, body) = self.block(i)?;
                done(
                    i,
                    StmtKind::For {
                        var,
                        is_static: st.is_some(),
                        start: lo,
                        end: hi,
                        step,
                        body,
                    },
                )
            }
            Tok::Ident(_) if assign_op(&i.peek_at(1).tok).is_some() => {
                let (i, target) = ident(i)?;
                let op = assign_op(&i.peek().tok).flatten();
                let (i, value) = self.expr(i.bump())?;
                let (i, _) = semi(i)?;
                done(i, StmtKind::Assign { target, op, value })
            }
            _ => {
                let (i, e) = self.expr(i)?;
                match i.peek().tok {
                    Tok::Semi => done(i.bump(), StmtKind::Expr(e)),
                    Tok::RBrace => Ok((i, StmtOrTail::Tail(e))),
                    _ if matches!(e.kind, ExprKind::If { .. } | ExprKind::Block(_)) => {
                        done(i, StmtKind::Expr(e))
                    }
                    _ => {
                        let mut err = semi(i)
                            .err()
                            .and_then(|e| match e {
                                Err::Error(e) | Err::Failure(e) => Some(e),
                                Err::Incomplete(_) => None,
                            })
                            .unwrap_or_else(|| PErr::expected(i, Expect::Token(";")));
                        if let Some((_, p)) = binop(&i.peek().tok) {
                            if p == 3
                                && matches!(e.kind, ExprKind::Binary(op, ..) if binop_power(op) == 3)
                            {
                                err = PErr::custom(
                                    i.peek().span,
                                    Code::Syntax,
                                    "comparison operators cannot be chained",
                                    Some("split it with `&&`, e.g. `a < b && b < c`"),
                                );
                            }
                        }
                        fail(err)
                    }
                }
            }
        }
    }

    fn expr<'a>(&self, i: Toks<'a>) -> PResult<'a, Expr> {
        self.expr_bp(i, 0)
    }

    /// Precedence climbing: parse operators binding at least as tight as `min`.
    fn expr_bp<'a>(&self, i: Toks<'a>, min: u8) -> PResult<'a, Expr> {
        self.nested(i, |i| {
            let start = i.start();
            let (mut i, mut lhs) = self.unary(i)?;
            loop {
                let t = &i.peek().tok;
                if *t == Tok::As {
                    if AS_POWER < min {
                        break;
                    }
                    self.deeper(i)?;
                    let (r, ty) = type_expr(i.bump())?;
                    i = r;
                    lhs = Expr {
                        kind: ExprKind::Cast(Box::new(lhs), ty),
                        span: Span {
                            start,
                            end: i.prev_end(),
                        },
                    };
                    continue;
                }
                let Some((op, p)) = binop(t) else { break };
                if p < min {
                    break;
                }
                if op == BinOp::Mul && i.peek_at(1).tok == Tok::Star {
                    let at = Span {
                        start: i.peek().span.start,
                        end: i.peek_at(1).span.end,
                    };
                    return Err(Err::Failure(power_operator(at)));
                }
                if p == 3
                    && matches!(lhs.kind, ExprKind::Binary(o, ..) if binop_power(o) == 3)
                    && lhs.span.start == start
                {
                    return Err(Err::Failure(PErr::custom(
                        i.peek().span,
                        Code::Syntax,
                        "comparison operators cannot be chained",
                        Some("split it with `&&`, e.g. `a < b && b < c`"),
                    )));
                }
                self.deeper(i)?;
                let (r, rhs) = self.expr_bp(i.bump(), p + 1)?;
                i = r;
                lhs = Expr {
                    kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                    span: Span {
                        start,
                        end: i.prev_end(),
                    },
                };
            }
            Ok((i, lhs))
        })
    }

    fn unary<'a>(&self, i: Toks<'a>) -> PResult<'a, Expr> {
        let start = i.start();
        let op = match i.peek().tok {
            Tok::Minus => Some(UnOp::Neg),
            Tok::Bang => Some(UnOp::Not),
            _ => None,
        };
        match op {
            Some(op) => self.nested(i.bump(), |i| {
                let (i, e) = self.unary(i)?;
                // Fold `-literal` right away so `-2147483648` and meta defaults stay literals.
                let kind = match (op, &e.kind) {
                    (UnOp::Neg, ExprKind::Int(v)) => ExprKind::Int(v.wrapping_neg()),
                    (UnOp::Neg, ExprKind::Float(v)) => ExprKind::Float(-v),
                    _ => ExprKind::Unary(op, Box::new(e)),
                };
                Ok((
                    i,
                    Expr {
                        kind,
                        span: Span {
                            start,
                            end: i.prev_end(),
                        },
                    },
                ))
            }),
            None => self.postfix(i),
        }
    }

    fn postfix<'a>(&self, i: Toks<'a>) -> PResult<'a, Expr> {
        // Indexing chains nest on the left: count them, then restore the depth.
        let saved = self.depth.get();
        let r = self.postfix_chain(i);
        self.depth.set(saved);
        r
    }

    fn postfix_chain<'a>(&self, i: Toks<'a>) -> PResult<'a, Expr> {
        let start = i.start();
        let (mut i, mut e) = self.primary(i)?;
        while i.peek().tok == Tok::LBracket {
            self.deeper(i)?;
            let item = |i: Toks<'a>| -> PResult<'a, IndexItem> {
                let t = i.peek();
                match t.tok {
                    Tok::Colon => Ok((i.bump(), IndexItem::Full(t.span))),
                    Tok::None => Ok((i.bump(), IndexItem::NewAxis(t.span))),
                    _ => Err(Err::Failure(PErr::custom(
                        t.span,
                        Code::BadIndex,
                        format!("expected `:` or `None` in an index, found {}", t.tok.describe()),
                        Some("tiles are indexed only to add axes, e.g. `x[:, None]`; use masks and pointer offsets to select elements"),
                    ))),
                }
            };
            let (r, items) = separated_list0(tok(Tok::Comma), item).parse(i.bump())?;
            let (r, _) = tok(Tok::RBracket)(r)?;
            i = r;
            e = Expr {
                kind: ExprKind::Index {
                    base: Box::new(e),
                    items,
                },
                span: Span {
                    start,
                    end: i.prev_end(),
                },
            };
        }
        Ok((i, e))
    }

    fn primary<'a>(&self, i: Toks<'a>) -> PResult<'a, Expr> {
        let t = i.peek();
        let start = t.span.start;
        let lit = |kind| Ok((i.bump(), Expr { kind, span: t.span }));
        match &t.tok {
            Tok::Int(v) => lit(ExprKind::Int(*v)),
            Tok::Float(v) => lit(ExprKind::Float(*v)),
            Tok::True => lit(ExprKind::Bool(true)),
            Tok::False => lit(ExprKind::Bool(false)),
            Tok::Ident(name) => {
                let callee = Ident {
                    name: name.clone(),
                    span: t.span,
                };
                let i = i.bump();
                if i.peek().tok != Tok::LParen {
                    return Ok((
                        i,
                        Expr {
                            kind: ExprKind::Name(name.clone()),
                            span: t.span,
                        },
                    ));
                }
                let (i, args) = self.list(i, Tok::LParen, Tok::RParen)?;
                Ok((
                    i,
                    Expr {
                        kind: ExprKind::Call { callee, args },
                        span: Span {
                            start,
                            end: i.prev_end(),
                        },
                    },
                ))
            }
            Tok::LParen => {
                let (i, mut e) = self.nested(i.bump(), |i| self.expr(i))?;
                let (i, _) = tok(Tok::RParen)(i)?;
                e.span = Span {
                    start,
                    end: i.prev_end(),
                };
                Ok((i, e))
            }
            Tok::LBracket => {
                let (i, items) = self.list(i, Tok::LBracket, Tok::RBracket)?;
                Ok((
                    i,
                    Expr {
                        kind: ExprKind::List(items),
                        span: Span {
                            start,
                            end: i.prev_end(),
                        },
                    },
                ))
            }
            Tok::If => self.if_expr(i),
            Tok::LBrace => {
                let (i, b) = self.block(i)?;
                let span = b.span;
                Ok((
                    i,
                    Expr {
                        kind: ExprKind::Block(b),
                        span,
                    },
                ))
            }
            _ => fail(PErr::expected(i, Expect::Thing("an expression"))),
        }
    }

    /// `open expr, expr, … close` (trailing comma allowed). Past `open` an error
    /// is final ([`Err::Failure`]): a fault inside an argument, however deep, is
    /// reported where it is, not as a missing `)` where the argument began.
    fn list<'a>(&self, i: Toks<'a>, open: Tok, close: Tok) -> PResult<'a, Vec<Expr>> {
        self.nested(i, |i| {
            let (mut i, _) = tok(open)(i)?;
            let mut items: Vec<Expr> = Vec::new();
            while i.peek().tok != close {
                let (r, e) = self.expr(i).map_err(cut)?;
                i = r;
                // `axis=1`: a keyword argument (Python, Triton).
                let keyword = match &e.kind {
                    ExprKind::Name(n) if i.peek().tok == Tok::Eq => Some((n.clone(), e.span)),
                    _ => None,
                };
                items.push(e);
                match (&i.peek().tok, keyword) {
                    (Tok::Comma, _) => i = i.bump(),
                    (t, _) if *t == close => break,
                    (_, Some((n, at))) => {
                        let at = Span {
                            start: at.start,
                            end: i.peek().span.end,
                        };
                        return Err(Err::Failure(keyword_argument(&n, at)));
                    }
                    _ => {
                        let mut e = PErr::expected(i, Expect::Token(close.text()));
                        e.expected.push(Expect::Token(","));
                        return Err(Err::Failure(e));
                    }
                }
            }
            let (i, _) = tok(close)(i)?;
            Ok((i, items))
        })
    }

    fn if_expr<'a>(&self, i: Toks<'a>) -> PResult<'a, Expr> {
        self.nested(i, |i| {
            let start = i.start();
            let (i, _) = tok(Tok::If)(i)?;
            let (i, cond) = self.expr(i)?;
            let (i, then_block) = self.block(i)?;
            let (i, else_branch) = if i.peek().tok == Tok::Else {
                let i = i.bump();
                let (i, e) = if i.peek().tok == Tok::If {
                    self.if_expr(i)?
                } else {
                    let (i, b) = self.block(i)?;
                    let span = b.span;
                    (
                        i,
                        Expr {
                            kind: ExprKind::Block(b),
                            span,
                        },
                    )
                };
                (i, Some(Box::new(e)))
            } else {
                (i, None)
            };
            Ok((
                i,
                Expr {
                    kind: ExprKind::If {
                        cond: Box::new(cond),
                        then_block,
                        else_branch,
                    },
                    span: Span {
                        start,
                        end: i.prev_end(),
                    },
                },
            ))
        })
    }
}

fn binop_power(op: BinOp) -> u8 {
    use BinOp::*;
    match op {
        Or => 1,
        And => 2,
        Eq | Ne | Lt | Le | Gt | Ge => 3,
        BitOr => 4,
        BitXor => 5,
        BitAnd => 6,
        Shl | Shr => 7,
        Add | Sub => 8,
        Mul | Div | Rem => 9,
    }
}

enum StmtOrTail {
    Stmt(Box<Stmt>),
    Tail(Expr),
}

/// Skip a broken statement: up to and including its `;`, or up to the `}` that
/// closes the enclosing block, counting braces from the statement's start
/// (parentheses are not counted: the broken statement may have left one open).
fn skip_stmt(mut i: Toks<'_>) -> Toks<'_> {
    let mut depth = 0i32;
    let start = i.pos;
    loop {
        match i.peek().tok {
            Tok::Eof | Tok::Kernel | Tok::Fn | Tok::Tune => return i,
            Tok::LBrace => depth += 1,
            Tok::RBrace => {
                if depth == 0 {
                    return i;
                }
                depth -= 1;
                if depth == 0 {
                    // A block-like statement (`for`, `if`) ends at its `}`.
                    return i.bump();
                }
            }
            Tok::Semi if depth == 0 => return i.bump(),
            Tok::Let | Tok::For if depth == 0 && i.pos > start => return i,
            _ => {}
        }
        i = i.bump();
    }
}

/// Skip to the next item keyword at brace depth 0.
fn skip_item(mut i: Toks<'_>) -> Toks<'_> {
    let mut depth = 0i32;
    loop {
        match i.peek().tok {
            Tok::Eof => return i,
            Tok::LBrace => depth += 1,
            Tok::RBrace => depth = (depth - 1).max(0),
            Tok::Kernel | Tok::Fn | Tok::Tune if depth == 0 => return i,
            _ => {}
        }
        i = i.bump();
    }
}

/// Parse a token list (from [`super::lexer::lex`]) into a module and the
/// diagnostics of the parts that had to be skipped.
pub fn parse_tokens(tokens: &[Token]) -> (Module, Vec<Diagnostic>) {
    let p = P {
        diags: RefCell::new(Vec::new()),
        depth: Cell::new(0),
    };
    if tokens.is_empty() {
        return (Module { items: vec![] }, vec![]);
    }
    let m = p.module(Toks::new(tokens));
    (m, p.diags.into_inner())
}
