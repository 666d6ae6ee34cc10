//! The arithmetic of command-line expressions, one grammar for all of them:
//! numbers, names, `+ - * /` (`*` and `/` binding tighter, left to right),
//! unary `-`, parentheses and `cdiv(a, b)`. What an expression becomes is
//! the caller's [`ExprBuilder`]: a [`crate::launch::GridExpr`] for
//! `tile-tune --grid`, an f64 for `--bytes` and `--flops`.

/// How [`parse_expr`] builds each piece of an expression.
pub trait ExprBuilder {
    type Out;
    /// A token that starts with a digit or `.`.
    fn number(&self, text: &str) -> Result<Self::Out, String>;
    /// A token that starts with a letter or `_`.
    fn name(&self, name: &str) -> Result<Self::Out, String>;
    fn neg(&self, a: Self::Out) -> Result<Self::Out, String>;
    /// `op` is one of `+ - * /`.
    fn binary(&self, op: char, a: Self::Out, b: Self::Out) -> Result<Self::Out, String>;
    fn cdiv(&self, a: Self::Out, b: Self::Out) -> Result<Self::Out, String>;
}

/// Parses `text` into what `b` builds of it.
pub fn parse_expr<B: ExprBuilder>(text: &str, b: &B) -> Result<B::Out, String> {
    let toks = tokenize(text)?;
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        b,
    };
    let v = p.sum()?;
    match toks.get(p.pos) {
        None => Ok(v),
        Some(t) => Err(format!("unexpected `{t}`")),
    }
}

fn tokenize(s: &str) -> Result<Vec<String>, String> {
    let mut toks = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if "+-*/(),".contains(c) {
            toks.push(c.to_string());
            chars.next();
        } else if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            let mut t = String::new();
            while let Some(&c) = chars.peek() {
                if !(c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                    break;
                }
                t.push(c);
                chars.next();
            }
            toks.push(t);
        } else {
            return Err(format!("unexpected character `{c}`"));
        }
    }
    if toks.is_empty() {
        return Err("empty expression".into());
    }
    Ok(toks)
}

struct Parser<'a, B> {
    toks: &'a [String],
    pos: usize,
    b: &'a B,
}

impl<B: ExprBuilder> Parser<'_, B> {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(String::as_str)
    }

    fn expect(&mut self, t: &str, missing: &str) -> Result<(), String> {
        if self.peek() != Some(t) {
            return Err(missing.into());
        }
        self.pos += 1;
        Ok(())
    }

    fn sum(&mut self) -> Result<B::Out, String> {
        let mut v = self.product()?;
        while let Some(op @ ("+" | "-")) = self.peek() {
            let op = op.chars().next().unwrap();
            self.pos += 1;
            let r = self.product()?;
            v = self.b.binary(op, v, r)?;
        }
        Ok(v)
    }

    fn product(&mut self) -> Result<B::Out, String> {
        let mut v = self.atom()?;
        while let Some(op @ ("*" | "/")) = self.peek() {
            let op = op.chars().next().unwrap();
            self.pos += 1;
            let r = self.atom()?;
            v = self.b.binary(op, v, r)?;
        }
        Ok(v)
    }

    fn atom(&mut self) -> Result<B::Out, String> {
        let t = self
            .peek()
            .ok_or("the expression ends too early")?
            .to_string();
        self.pos += 1;
        match t.as_str() {
            "-" => {
                let a = self.atom()?;
                self.b.neg(a)
            }
            "(" => {
                let v = self.sum()?;
                self.expect(")", "missing `)`")?;
                Ok(v)
            }
            "cdiv" if self.peek() == Some("(") => {
                self.pos += 1;
                let a = self.sum()?;
                self.expect(",", "`cdiv` takes two arguments, `cdiv(a, b)`")?;
                let b = self.sum()?;
                self.expect(")", "missing `)`")?;
                self.b.cdiv(a, b)
            }
            _ if t.starts_with(|c: char| c.is_ascii_digit() || c == '.') => self.b.number(&t),
            _ if t.starts_with(|c: char| c.is_alphabetic() || c == '_') => self.b.name(&t),
            _ => Err(format!("unexpected `{t}`")),
        }
    }
}
