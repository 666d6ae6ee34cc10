//! The abstract syntax tree. Every node carries the byte span it came from.

use tile_ir::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Kernel(KernelDef),
    Fn(FnDef),
    Tune(TuneDef),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// `*f32` or `i32`; the element name is checked later.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    pub ptr: bool,
    pub name: Ident,
    pub span: Span,
}

/// `const NAME: i32 = 1024` in a kernel's `<…>`.
#[derive(Clone, Debug, PartialEq)]
pub struct MetaParam {
    pub name: Ident,
    pub ty: TypeExpr,
    pub default: Option<Expr>,
    pub span: Span,
}

/// A kernel or helper parameter; helpers may leave the type out (fully generic).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    pub name: Ident,
    pub ty: Option<TypeExpr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KernelDef {
    pub name: Ident,
    pub metas: Vec<MetaParam>,
    pub params: Vec<ParamDecl>,
    pub body: Block,
    pub span: Span,
}

/// A helper: inlined at each call, generic over the shapes of its arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct FnDef {
    pub name: Ident,
    pub params: Vec<ParamDecl>,
    pub ret: Option<TypeExpr>,
    pub body: Block,
    pub span: Span,
}

/// `tune k { key: [n], BLOCK: [1024, 2048], warps: [4, 8], grid: [cdiv(n, BLOCK)] }`
#[derive(Clone, Debug, PartialEq)]
pub struct TuneDef {
    pub kernel: Ident,
    pub entries: Vec<TuneEntry>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TuneEntry {
    pub name: Ident,
    pub values: Vec<TuneValue>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TuneValue {
    Int(i64, Span),
    Name(Ident),
    /// An entry of `grid: [cdiv(M, BM), N]` or `where: [BC == 128 * warps]`:
    /// an expression, checked by the checker (integer arithmetic over scalar
    /// parameters and meta-parameters; conditions over the tuned values).
    Expr(Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    /// A final expression without `;`: the block's value.
    pub tail: Option<Box<Expr>>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    Let {
        mutable: bool,
        name: Ident,
        ty: Option<TypeExpr>,
        init: Expr,
    },
    /// `x = e` or, with `op`, `x op= e`.
    Assign {
        target: Ident,
        op: Option<BinOp>,
        value: Expr,
    },
    For {
        var: Ident,
        is_static: bool,
        start: Expr,
        end: Expr,
        step: Option<Expr>,
        body: Block,
    },
    Expr(Expr),
    /// A statement that failed to parse (already reported).
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    And,
    Or,
    BitAnd,
    BitOr,
    BitXor,
    Shl,
    Shr,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl BinOp {
    /// The comparison this operator is (`==` … `>=`), or `None`.
    pub fn comparison(self) -> Option<tile_ir::CmpOp> {
        use tile_ir::CmpOp;
        Some(match self {
            BinOp::Eq => CmpOp::Eq,
            BinOp::Ne => CmpOp::Ne,
            BinOp::Lt => CmpOp::Lt,
            BinOp::Le => CmpOp::Le,
            BinOp::Gt => CmpOp::Gt,
            BinOp::Ge => CmpOp::Ge,
            _ => return None,
        })
    }

    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::And => "&&",
            BinOp::Or => "||",
            BinOp::BitAnd => "&",
            BinOp::BitOr => "|",
            BinOp::BitXor => "^",
            BinOp::Shl => "<<",
            BinOp::Shr => ">>",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

/// One position of `x[:, None]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexItem {
    Full(Span),
    NewAxis(Span),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Name(String),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Cast(Box<Expr>, TypeExpr),
    Call {
        callee: Ident,
        args: Vec<Expr>,
    },
    Index {
        base: Box<Expr>,
        items: Vec<IndexItem>,
    },
    /// `[a, b]`: a shape or a permutation argument.
    List(Vec<Expr>),
    If {
        cond: Box<Expr>,
        then_block: Block,
        else_branch: Option<Box<Expr>>,
    },
    Block(Block),
    /// An expression that failed to parse (already reported).
    Error,
}
