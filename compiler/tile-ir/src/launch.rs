//! What the host passes a compiled kernel besides its declared parameters
//! ([`hidden_params`]): per TMA operand a tensor map, passed by value as a
//! 128-byte `__grid_constant__` parameter (TMA reads it in place, so a launch
//! uploads nothing and never waits), which the host encodes at launch from the
//! operand's description; then one `i32` whose bit `k` says the host could
//! encode operand `k`'s map (else the kernel copies that tensor without TMA).
//! Codegen produces these descriptions, packs store them, the runtime reads
//! them.

use serde::{Deserialize, Serialize};

/// A hidden kernel parameter, in the order [`hidden_params`] gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HiddenParam {
    /// TMA operand `k`'s tensor map: 128 bytes, 64-byte aligned, by value.
    TensorMap(usize),
    /// Bit `k` set: operand `k`'s map was encoded.
    Described,
}

impl HiddenParam {
    /// The parameter's type in the kernel's MLIR signature (a map is a
    /// `byval` pointer: `tile-codegen` gives it its attributes).
    pub fn mlir_type(self) -> &'static str {
        match self {
            HiddenParam::TensorMap(_) => "!llvm.ptr",
            HiddenParam::Described => "i32",
        }
    }

    /// The parameter's size in bytes as the driver lays it out.
    pub fn bytes(self) -> usize {
        match self {
            HiddenParam::TensorMap(_) => TENSOR_MAP_BYTES,
            HiddenParam::Described => 4,
        }
    }
}

/// Bytes of a tensor map (`CUtensorMap`), and its alignment.
pub const TENSOR_MAP_BYTES: usize = 128;
pub const TENSOR_MAP_ALIGN: usize = 64;

/// The hidden parameters of a kernel with `tma_operands` TMA operands, after
/// its declared ones: the maps, then the mask (none without operands). At
/// most 32 operands (the mask's bits).
pub fn hidden_params(tma_operands: usize) -> Vec<HiddenParam> {
    assert!(tma_operands <= 32, "at most 32 TMA operands a kernel");
    let mut h: Vec<HiddenParam> = (0..tma_operands).map(HiddenParam::TensorMap).collect();
    if tma_operands > 0 {
        h.push(HiddenParam::Described);
    }
    h
}

/// A launch-time integer: a kernel parameter's value or a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HostScalar {
    Param(usize),
    Const(i64),
}

/// A tensor the host describes to TMA for one pipelined load: row-major
/// `rows × cols` elements of `elem_bytes` from pointer parameter `base`,
/// rows `row_stride` elements apart, fetched in boxes of `box_rows ×
/// box_cols` with `swizzle_bytes` (32, 64 or 128) shared-memory swizzling.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TmaOperand {
    pub base: usize,
    pub elem_bytes: u32,
    pub rows: HostScalar,
    pub cols: HostScalar,
    pub row_stride: HostScalar,
    pub box_rows: u32,
    pub box_cols: u32,
    pub swizzle_bytes: u32,
}

impl TmaOperand {
    /// `a: rows M × cols K, row stride K, boxes of 128 × 64` (parameters by name).
    pub fn describe(&self, params: &[String]) -> String {
        let name = |i: usize| params.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
        let scalar = |h: HostScalar| match h {
            HostScalar::Param(i) => name(i),
            HostScalar::Const(c) => c.to_string(),
        };
        format!(
            "{}: rows {} × cols {}, row stride {}, boxes of {} × {}",
            name(self.base),
            scalar(self.rows),
            scalar(self.cols),
            scalar(self.row_stride),
            self.box_rows,
            self.box_cols
        )
    }
}

/// One axis of a kernel's launch grid, as its `tune` block declares it
/// (`grid: [cdiv(M, BM), N / BN]`): integer arithmetic over the kernel's
/// scalar parameters (by name, valued by the launch's arguments), its
/// meta-parameters (by name, valued by the config) and constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GridExpr {
    Const(i64),
    Param(String),
    Meta(String),
    Add(Box<GridExpr>, Box<GridExpr>),
    Sub(Box<GridExpr>, Box<GridExpr>),
    Mul(Box<GridExpr>, Box<GridExpr>),
    /// Integer division rounding toward zero, as `/` does in kernels.
    Div(Box<GridExpr>, Box<GridExpr>),
    /// Ceiling division `cdiv(a, b)` = `(a + b - 1) / b` for positive `b`.
    Cdiv(Box<GridExpr>, Box<GridExpr>),
}

impl GridExpr {
    /// The value with `param(name)` for scalar parameters and `meta(name)` for
    /// meta-parameters; an error names what is missing, a division by zero or
    /// an overflow.
    pub fn eval(
        &self,
        param: &dyn Fn(&str) -> Option<i64>,
        meta: &dyn Fn(&str) -> Option<i64>,
    ) -> Result<i64, String> {
        let bin = |a: &GridExpr, b: &GridExpr| -> Result<(i64, i64), String> {
            Ok((a.eval(param, meta)?, b.eval(param, meta)?))
        };
        let overflow = || format!("`{self}` overflows");
        match self {
            GridExpr::Const(c) => Ok(*c),
            GridExpr::Param(n) => {
                param(n).ok_or_else(|| format!("no integer value for parameter `{n}`"))
            }
            GridExpr::Meta(n) => {
                meta(n).ok_or_else(|| format!("no value for meta-parameter `{n}`"))
            }
            GridExpr::Add(a, b) => {
                let (x, y) = bin(a, b)?;
                x.checked_add(y).ok_or_else(overflow)
            }
            GridExpr::Sub(a, b) => {
                let (x, y) = bin(a, b)?;
                x.checked_sub(y).ok_or_else(overflow)
            }
            GridExpr::Mul(a, b) => {
                let (x, y) = bin(a, b)?;
                x.checked_mul(y).ok_or_else(overflow)
            }
            GridExpr::Div(a, b) | GridExpr::Cdiv(a, b) => {
                let (x, y) = bin(a, b)?;
                if y == 0 {
                    return Err(format!("`{self}` divides by zero"));
                }
                let q = x.checked_div(y).ok_or_else(overflow)?;
                let round_up =
                    matches!(self, GridExpr::Cdiv(..)) && x % y != 0 && (x < 0) == (y < 0);
                Ok(if round_up { q + 1 } else { q })
            }
        }
    }

    /// Parses `cdiv(n, BLOCK)`, `rows * 2 + 1`, `4096` (what `tile-tune
    /// --grid` takes; the grammar of [`crate::expr`], integers only). Every
    /// name is a [`GridExpr::Param`] until [`GridExpr::resolve`] says which
    /// are meta-parameters.
    pub fn parse(text: &str) -> Result<GridExpr, String> {
        crate::expr::parse_expr(text, &GridBuilder).map_err(|e| format!("`{text}`: {e}"))
    }

    /// The same expression with each name that is not a parameter
    /// (`is_param`) read as a meta-parameter.
    pub fn resolve(mut self, is_param: &dyn Fn(&str) -> bool) -> GridExpr {
        self.resolve_names(is_param);
        self
    }

    fn resolve_names(&mut self, is_param: &dyn Fn(&str) -> bool) {
        match self {
            GridExpr::Param(n) | GridExpr::Meta(n) => {
                let n = std::mem::take(n);
                *self = if is_param(&n) {
                    GridExpr::Param(n)
                } else {
                    GridExpr::Meta(n)
                };
            }
            GridExpr::Const(_) => {}
            GridExpr::Add(a, b)
            | GridExpr::Sub(a, b)
            | GridExpr::Mul(a, b)
            | GridExpr::Div(a, b)
            | GridExpr::Cdiv(a, b) => {
                a.resolve_names(is_param);
                b.resolve_names(is_param);
            }
        }
    }

    /// Whether the value depends on a parameter (an argument of the launch).
    pub fn reads_params(&self) -> bool {
        match self {
            GridExpr::Param(_) => true,
            GridExpr::Const(_) | GridExpr::Meta(_) => false,
            GridExpr::Add(a, b)
            | GridExpr::Sub(a, b)
            | GridExpr::Mul(a, b)
            | GridExpr::Div(a, b)
            | GridExpr::Cdiv(a, b) => a.reads_params() || b.reads_params(),
        }
    }

    fn prec(&self) -> u8 {
        match self {
            GridExpr::Add(..) | GridExpr::Sub(..) => 1,
            GridExpr::Mul(..) | GridExpr::Div(..) => 2,
            _ => 3,
        }
    }
}

/// [`GridExpr::parse`]'s pieces.
struct GridBuilder;

impl crate::expr::ExprBuilder for GridBuilder {
    type Out = GridExpr;

    fn number(&self, text: &str) -> Result<GridExpr, String> {
        text.parse()
            .map(GridExpr::Const)
            .map_err(|_| format!("`{text}` is not an integer"))
    }

    fn name(&self, name: &str) -> Result<GridExpr, String> {
        Ok(GridExpr::Param(name.to_string()))
    }

    fn neg(&self, a: GridExpr) -> Result<GridExpr, String> {
        Ok(GridExpr::Sub(Box::new(GridExpr::Const(0)), Box::new(a)))
    }

    fn binary(&self, op: char, a: GridExpr, b: GridExpr) -> Result<GridExpr, String> {
        let (a, b) = (Box::new(a), Box::new(b));
        Ok(match op {
            '+' => GridExpr::Add(a, b),
            '-' => GridExpr::Sub(a, b),
            '*' => GridExpr::Mul(a, b),
            _ => GridExpr::Div(a, b),
        })
    }

    fn cdiv(&self, a: GridExpr, b: GridExpr) -> Result<GridExpr, String> {
        Ok(GridExpr::Cdiv(Box::new(a), Box::new(b)))
    }
}

/// As written in the source: `cdiv(M, BM)`, `rows * 2 + 1`.
impl std::fmt::Display for GridExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |f: &mut std::fmt::Formatter<'_>, e: &GridExpr, min: u8| {
            if e.prec() < min {
                write!(f, "({e})")
            } else {
                write!(f, "{e}")
            }
        };
        let (a, op, b) = match self {
            GridExpr::Const(c) => return write!(f, "{c}"),
            GridExpr::Param(n) | GridExpr::Meta(n) => return write!(f, "{n}"),
            GridExpr::Cdiv(a, b) => return write!(f, "cdiv({a}, {b})"),
            GridExpr::Add(a, b) => (a, "+", b),
            GridExpr::Sub(a, b) => (a, "-", b),
            GridExpr::Mul(a, b) => (a, "*", b),
            GridExpr::Div(a, b) => (a, "/", b),
        };
        let p = self.prec();
        side(f, a, p)?;
        write!(f, " {op} ")?;
        side(f, b, p + 1)
    }
}

/// One condition of a tune block's `where:` entry (`where: [BC == 128 * warps]`):
/// comparisons of [`GridExpr`]s over the meta-parameters and `warps`, joined
/// by `&&`, `||` and `!`. A configuration is compiled only where every
/// condition of its block holds ([`crate::TuneSpace::configs`]), so a block
/// can pair its choices instead of taking their whole cartesian product.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TuneCond {
    Cmp(crate::CmpOp, GridExpr, GridExpr),
    And(Box<TuneCond>, Box<TuneCond>),
    Or(Box<TuneCond>, Box<TuneCond>),
    Not(Box<TuneCond>),
}

impl TuneCond {
    /// Whether the condition holds with `meta(name)` for meta-parameters
    /// (`warps` among them); an error names a missing value, a division by
    /// zero or an overflow.
    pub fn holds(&self, meta: &dyn Fn(&str) -> Option<i64>) -> Result<bool, String> {
        let none = |_: &str| None;
        Ok(match self {
            TuneCond::Cmp(op, a, b) => {
                let (x, y) = (a.eval(&none, meta)?, b.eval(&none, meta)?);
                let (x, y) = (crate::Const::Int(x), crate::Const::Int(y));
                crate::consteval::cmp(*op, x, y, crate::Scalar::I64) == crate::Const::Bool(true)
            }
            TuneCond::And(a, b) => a.holds(meta)? && b.holds(meta)?,
            TuneCond::Or(a, b) => a.holds(meta)? || b.holds(meta)?,
            TuneCond::Not(a) => !a.holds(meta)?,
        })
    }
}

/// As written in the source, fully parenthesised where operators mix:
/// `BC == 128 * warps`, `(BL == 32 && BP == 32) || !(N > 4)`.
impl std::fmt::Display for TuneCond {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |f: &mut std::fmt::Formatter<'_>, c: &TuneCond| match c {
            TuneCond::Cmp(..) | TuneCond::Not(..) => write!(f, "{c}"),
            _ => write!(f, "({c})"),
        };
        match self {
            TuneCond::Cmp(op, a, b) => {
                let op = match op {
                    crate::CmpOp::Eq => "==",
                    crate::CmpOp::Ne => "!=",
                    crate::CmpOp::Lt => "<",
                    crate::CmpOp::Le => "<=",
                    crate::CmpOp::Gt => ">",
                    crate::CmpOp::Ge => ">=",
                };
                write!(f, "{a} {op} {b}")
            }
            TuneCond::Not(a) => match **a {
                TuneCond::Not(_) => write!(f, "!{a}"),
                _ => write!(f, "!({a})"),
            },
            TuneCond::And(a, b) | TuneCond::Or(a, b) => {
                let op = if matches!(self, TuneCond::And(..)) {
                    "&&"
                } else {
                    "||"
                };
                side(f, a)?;
                write!(f, " {op} ")?;
                side(f, b)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn grid_expressions_parse_as_written() {
        let is_param = |n: &str| n == "C" || n == "rows";
        let e = GridExpr::parse("cdiv(C, BC) * 2 + rows / 4 - 1")
            .unwrap()
            .resolve(&is_param);
        assert_eq!(e.to_string(), "cdiv(C, BC) * 2 + rows / 4 - 1");
        let v = e
            .eval(
                &|n| match n {
                    "C" => Some(768),
                    "rows" => Some(64),
                    _ => None,
                },
                &|n| (n == "BC").then_some(256),
            )
            .unwrap();
        assert_eq!(v, 3 * 2 + 16 - 1);
        assert!(e.reads_params());
        let m = GridExpr::parse("(8 - 2) * BC").unwrap().resolve(&is_param);
        assert!(!m.reads_params());
        assert_eq!(m.eval(&|_| None, &|_| Some(2)).unwrap(), 12);
        for bad in ["", "cdiv(C)", "C +", "2 ** 3", "C $ 2", "(C", "C)"] {
            assert!(GridExpr::parse(bad).is_err(), "`{bad}` parsed");
        }
    }

    /// A config serialised without `stages` (every pack before them) reads
    /// back as the compiler's choice and writes the same text; one with
    /// them round-trips.
    #[test]
    fn configs_without_stages_read_as_before() {
        let text = r#"{"meta":[["BC",256]],"warps":4}"#;
        let old: crate::Config = serde_json::from_str(text).unwrap();
        assert_eq!(old.stages, None);
        assert_eq!(serde_json::to_string(&old).unwrap(), text);
        assert_eq!(old.ctas, None);
        let deep = crate::Config {
            stages: Some(3),
            ..old.clone()
        };
        let json = serde_json::to_string(&deep).unwrap();
        assert_eq!(json, r#"{"meta":[["BC",256]],"warps":4,"stages":3}"#);
        assert_eq!(serde_json::from_str::<crate::Config>(&json).unwrap(), deep);
        let budget = crate::Config {
            ctas: Some(5),
            ..old
        };
        let json = serde_json::to_string(&budget).unwrap();
        assert_eq!(json, r#"{"meta":[["BC",256]],"warps":4,"ctas":5}"#);
        assert_eq!(
            serde_json::from_str::<crate::Config>(&json).unwrap(),
            budget
        );
    }

    use super::GridExpr::{self, *};

    fn b(e: GridExpr) -> Box<GridExpr> {
        Box::new(e)
    }

    fn eval(e: &GridExpr) -> Result<i64, String> {
        let param = |n: &str| match n {
            "M" => Some(1000),
            "rows" => Some(7),
            _ => None,
        };
        let meta = |n: &str| (n == "BM").then_some(128);
        e.eval(&param, &meta)
    }

    #[test]
    fn evaluates_and_prints() {
        let cd = Cdiv(b(Param("M".into())), b(Meta("BM".into())));
        assert_eq!(eval(&cd), Ok(8));
        assert_eq!(cd.to_string(), "cdiv(M, BM)");
        let e = Mul(b(Add(b(Param("rows".into())), b(Const(1)))), b(Const(2)));
        assert_eq!(eval(&e), Ok(16));
        assert_eq!(e.to_string(), "(rows + 1) * 2");
        let e = Sub(b(Const(10)), b(Sub(b(Const(3)), b(Const(1)))));
        assert_eq!(eval(&e), Ok(8));
        assert_eq!(e.to_string(), "10 - (3 - 1)");
        assert_eq!(
            eval(&Div(b(Param("M".into())), b(Meta("BM".into())))),
            Ok(7)
        );
        assert_eq!(eval(&Cdiv(b(Const(1024)), b(Const(256)))), Ok(4));
        assert_eq!(eval(&Cdiv(b(Const(-5)), b(Const(2)))), Ok(-2));
    }

    #[test]
    fn errors_name_the_cause() {
        assert!(eval(&Param("N".into())).unwrap_err().contains("`N`"));
        assert!(eval(&Meta("BN".into())).unwrap_err().contains("`BN`"));
        let e = Div(b(Const(1)), b(Sub(b(Const(1)), b(Const(1)))));
        assert!(eval(&e).unwrap_err().contains("divides by zero"));
        let e = Mul(b(Const(i64::MAX)), b(Const(2)));
        assert!(eval(&e).unwrap_err().contains("overflows"));
    }

    #[test]
    fn serialises_as_tagged_json() {
        let cd = Cdiv(b(Param("M".into())), b(Const(2)));
        let j = serde_json::to_string(&cd).unwrap();
        assert_eq!(j, r#"{"cdiv":[{"param":"M"},{"const":2}]}"#);
        assert_eq!(serde_json::from_str::<GridExpr>(&j).unwrap(), cd);
    }

    #[test]
    fn tune_conditions_hold_print_and_round_trip() {
        use super::TuneCond;
        use crate::CmpOp;
        let warps = Mul(b(Const(128)), b(Meta("warps".into())));
        let paired = TuneCond::Cmp(CmpOp::Eq, Meta("BC".into()), warps);
        let narrow = TuneCond::Not(Box::new(TuneCond::Cmp(
            CmpOp::Gt,
            Meta("N".into()),
            Const(4),
        )));
        let c = TuneCond::Or(Box::new(paired.clone()), Box::new(narrow));
        assert_eq!(c.to_string(), "BC == 128 * warps || !(N > 4)");
        let at = |bc: i64, w: i64, n: i64| {
            move |name: &str| match name {
                "BC" => Some(bc),
                "warps" => Some(w),
                "N" => Some(n),
                _ => None,
            }
        };
        assert_eq!(c.holds(&at(1024, 8, 8)), Ok(true));
        assert_eq!(c.holds(&at(1024, 2, 8)), Ok(false));
        assert_eq!(c.holds(&at(1024, 2, 4)), Ok(true));
        assert!(paired.holds(&|_| None).unwrap_err().contains("`BC`"));
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<TuneCond>(&j).unwrap(), c);
    }

    /// Packs written before `grid:` existed hold no `grid` in their tune
    /// space: they read as `None`, and a space without one writes none.
    #[test]
    fn tune_spaces_without_a_grid_stay_readable() {
        let old = r#"{"key":["n"],"params":[["BLOCK",[1024]]],"warps":[4]}"#;
        let t: crate::TuneSpace = serde_json::from_str(old).unwrap();
        assert_eq!(t.grid, None);
        assert_eq!(serde_json::to_string(&t).unwrap(), old);
    }
}
