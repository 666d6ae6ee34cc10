//! The generator's math functions, reductions and `dot`, each with the
//! class (error bound) of its result: see "Tolerances" in [`super`].

use super::{fn_err, Cls, Dt, Gen, Sh, Val, MATH_FNS, SUBNORMAL_ABS, ULP32};
use rand::Rng;

impl Gen {
    /// A math function of an f32 argument, converted to `dt`.
    pub(super) fn math(&mut self, dt: Dt, sh: Sh, d: u32, exact: bool) -> Option<Val> {
        let f = if exact {
            "sqrt"
        } else {
            MATH_FNS[self.rng.random_range(0..MATH_FNS.len())]
        };
        // sqrt is correctly rounded on both sides, but not Lipschitz at 0;
        // expm1 and pow have unbounded slopes relative to their results: only
        // of exact arguments. The others take bounded-error arguments.
        let exact_arg = exact || matches!(f, "sqrt" | "expm1" | "pow");
        let mut a = self.expr(Dt::F32, sh, d, exact_arg);
        if a.konst {
            // A function of a constant may be folded, and a folded NaN or
            // infinity is an error (E0033): take a run-time argument.
            a = self.leaf_runtime(Dt::F32, sh);
        }
        let ea = a.cls.abs_err();
        if !ea.is_finite() {
            return None;
        }
        let (text, cls) = match f {
            "exp" | "exp2" => {
                // Clamped to [-20, 20]: no overflow, no subnormal results (the
                // GPU's ex2.approx.ftz flushes them).
                let (rel, slope) = if f == "exp" {
                    (fn_err("exp_rel"), 1.0)
                } else {
                    (fn_err("exp2_rel"), std::f64::consts::LN_2)
                };
                let m = if f == "exp" {
                    20f64.exp()
                } else {
                    2f64.powi(20)
                };
                (
                    format!("{f}(minimum(maximum({}, -20.0), 20.0))", a.text),
                    Cls {
                        m,
                        e: 0.0,
                        r: slope * ea + rel,
                    },
                )
            }
            "log" => (
                // |x| + 1 ≥ 1: no subnormal (flushed) or non-positive argument.
                format!("log(abs({}) + 1.0)", a.text),
                Cls {
                    m: if a.cls.m.is_finite() {
                        (a.cls.m + 1.0).ln().max(1.0)
                    } else {
                        89.0
                    },
                    e: ea + fn_err("log_abs") + ULP32,
                    r: 0.0,
                },
            ),
            "rsqrt" => (
                format!("rsqrt(abs({}) + 1.0)", a.text),
                Cls {
                    m: 1.0,
                    e: 0.5 * ea + fn_err("rsqrt_rel") + ULP32,
                    r: 0.0,
                },
            ),
            "sigmoid" => (
                format!("sigmoid({})", a.text),
                Cls {
                    m: 1.0,
                    e: 0.25 * ea + fn_err("sigmoid_abs"),
                    r: 0.0,
                },
            ),
            "tanh" => (
                format!("tanh({})", a.text),
                Cls {
                    m: 1.0,
                    e: ea + fn_err("tanh_abs"),
                    r: 0.0,
                },
            ),
            "sin" | "cos" => (
                // Inside the domain of the documented bound (|x| <= 105615).
                format!("{f}(minimum(maximum({}, -100.0), 100.0))", a.text),
                Cls {
                    m: 1.0,
                    e: ea + SUBNORMAL_ABS,
                    r: 2.0 * fn_err("ext_ulp") * ULP32,
                },
            ),
            "erf" => (
                format!("erf({})", a.text),
                Cls {
                    m: 1.0,
                    e: 1.13 * ea + SUBNORMAL_ABS,
                    r: 2.0 * fn_err("ext_ulp") * ULP32,
                },
            ),
            "log1p" => (
                format!("log1p(abs({}))", a.text),
                Cls {
                    m: if a.cls.m.is_finite() {
                        (a.cls.m + 1.0).ln().max(1.0)
                    } else {
                        89.0
                    },
                    e: ea + SUBNORMAL_ABS,
                    r: 2.0 * fn_err("log1p_ulp") * ULP32,
                },
            ),
            "expm1" => (
                format!("expm1(minimum(maximum({}, -20.0), 20.0))", a.text),
                Cls {
                    m: 20f64.exp(),
                    e: SUBNORMAL_ABS,
                    r: 2.0 * fn_err("ext_ulp") * ULP32,
                },
            ),
            "pow" => {
                let b = self.expr(Dt::F32, sh, d, true);
                let b = if b.konst {
                    self.leaf_runtime(Dt::F32, sh)
                } else {
                    b
                };
                (
                    format!("pow({}, {})", a.text, b.text),
                    Cls {
                        m: f64::INFINITY,
                        e: SUBNORMAL_ABS,
                        r: 2.0 * fn_err("ext_ulp") * ULP32,
                    },
                )
            }
            _ => (format!("sqrt({})", a.text), Cls::exact(a.cls.m.sqrt())),
        };
        let v = Val {
            text,
            dt: Dt::F32,
            sh: a.sh,
            cls,
            konst: false,
            splat: a.splat,
            bcast: false,
        };
        let v = self.cast(v, dt);
        Some(self.fit(v, dt, sh))
    }

    /// A reduction of a full tile to `sh` (a row, a column or a scalar).
    pub(super) fn reduce(&mut self, dt: Dt, sh: Sh, d: u32, exact: bool) -> Option<Val> {
        let op = ["sum", "max", "min"][self.rng.random_range(0..3)];
        // Code generation reduces f32 (16-bit floats widened) and i32 tiles
        // only ("reductions of i64 tiles" is unsupported though the checker
        // accepts it): no i64 reductions.
        if dt == Dt::I64 {
            return None;
        }
        let float_sum = op == "sum" && dt.is_float();
        if float_sum && exact {
            return None;
        }
        let a = self.expr(dt, Sh::Full, d, exact);
        let (len, text) = match sh {
            Sh::Row => (self.bn_max, format!("{op}({}, 1)[:, None]", a.text)),
            Sh::Col => (self.bm_max, format!("{op}({}, 0)[None, :]", a.text)),
            _ => (self.bm_max * self.bn_max, format!("{op}({})", a.text)),
        };
        let cls = if !dt.is_float() {
            Cls::EXACT_UNBOUNDED
        } else if float_sum {
            let (m, ea) = (a.cls.m, a.cls.abs_err());
            if !(m.is_finite() && ea.is_finite()) {
                return None;
            }
            let l = len as f64;
            Cls {
                m: l * m,
                e: l * ea + l * l * m * ULP32,
                r: dt.ulp(),
            }
        } else {
            a.cls
        };
        Some(Val {
            text,
            dt,
            sh,
            cls,
            konst: false,
            splat: sh == Sh::Scalar,
            bcast: false,
        })
    }

    /// `dot` of two tiles of small integers (|v| ≤ 7) as bf16: exact on both
    /// sides, but not exact once added to: `x + dot(a, b)` may run as
    /// `dot(a, b, x)` (the `dot_acc` pass, docs/LANGUAGE.md), which rounds
    /// inside the tensor core's accumulation instead of once after it
    /// (fz_20261203_1412: 1 ulp apart). The class allows a few roundings.
    pub(super) fn dot(&mut self, dt: Dt) -> Val {
        let k = [16, 32][self.rng.random_range(0..2)];
        let (xa, xb) = (self.rng.random_range(0..3), self.rng.random_range(0..3));
        let kk = self.name("kk");
        self.line(&format!("let {kk} = arange(0, {k});"));
        let text = format!(
            "dot(((load(x{xa} + r * n + {kk}[None, :], (r < m) & ({kk}[None, :] < n), 0) as i32) % 8) as bf16, \
             ((load(x{xb} + {kk}[:, None] * n + c, ({kk}[:, None] < m) & (c < n), 0) as i32) % 8) as bf16)"
        );
        let v = Val {
            text,
            dt: Dt::F32,
            sh: Sh::Full,
            cls: Cls {
                m: 49.0 * k as f64,
                e: 0.0,
                r: 4.0 * ULP32,
            },
            konst: false,
            splat: false,
            bcast: false,
        };
        self.cast(v, dt)
    }
}
