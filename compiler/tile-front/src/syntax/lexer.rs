//! Lexer: source text → tokens with byte spans, written with nom.
//!
//! Never fails as a whole: an unknown character or a malformed literal becomes a
//! diagnostic, is skipped, and lexing continues, so the parser still sees the rest.

use crate::diag::{Code, Diagnostic};
use nom::branch::alt;
use nom::bytes::complete::{tag, take_until, take_while, take_while1};
use nom::character::complete::{char, digit1, one_of};
use nom::combinator::{opt, recognize};
use nom::sequence::pair;
use nom::{IResult, Parser};
use tile_ir::Span;

/// Token kinds. Type names (`f32`, …) and builtins are plain identifiers.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Ident(String),
    Int(i64),
    Float(f64),
    // keywords
    Kernel,
    Fn,
    Tune,
    Let,
    Mut,
    For,
    In,
    Static,
    Step,
    If,
    Else,
    Const,
    True,
    False,
    As,
    None,
    // punctuation
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Colon,
    Semi,
    DotDot,
    Arrow,
    Eq,
    EqEq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Amp,
    AmpAmp,
    Pipe,
    PipePipe,
    Caret,
    Bang,
    Shl,
    Shr,
    PlusEq,
    MinusEq,
    StarEq,
    SlashEq,
    PercentEq,
    /// End of input (always the last token).
    Eof,
}

impl Tok {
    /// How the token is shown in "expected …, found …" messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier `{s}`"),
            Tok::Int(v) => format!("integer `{v}`"),
            Tok::Float(v) => format!("number `{v:?}`"),
            Tok::Eof => "end of file".to_string(),
            t => format!("`{}`", t.text()),
        }
    }

    /// Source text of a keyword or punctuation token.
    pub fn text(&self) -> &'static str {
        match self {
            Tok::Kernel => "kernel",
            Tok::Fn => "fn",
            Tok::Tune => "tune",
            Tok::Let => "let",
            Tok::Mut => "mut",
            Tok::For => "for",
            Tok::In => "in",
            Tok::Static => "static",
            Tok::Step => "step",
            Tok::If => "if",
            Tok::Else => "else",
            Tok::Const => "const",
            Tok::True => "true",
            Tok::False => "false",
            Tok::As => "as",
            Tok::None => "None",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Semi => ";",
            Tok::DotDot => "..",
            Tok::Arrow => "->",
            Tok::Eq => "=",
            Tok::EqEq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::Amp => "&",
            Tok::AmpAmp => "&&",
            Tok::Pipe => "|",
            Tok::PipePipe => "||",
            Tok::Caret => "^",
            Tok::Bang => "!",
            Tok::Shl => "<<",
            Tok::Shr => ">>",
            Tok::PlusEq => "+=",
            Tok::MinusEq => "-=",
            Tok::StarEq => "*=",
            Tok::SlashEq => "/=",
            Tok::PercentEq => "%=",
            Tok::Ident(_) => "identifier",
            Tok::Int(_) => "integer",
            Tok::Float(_) => "number",
            Tok::Eof => "end of file",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

fn keyword(s: &str) -> Option<Tok> {
    Some(match s {
        "kernel" => Tok::Kernel,
        "fn" => Tok::Fn,
        "tune" => Tok::Tune,
        "let" => Tok::Let,
        "mut" => Tok::Mut,
        "for" => Tok::For,
        "in" => Tok::In,
        "static" => Tok::Static,
        "step" => Tok::Step,
        "if" => Tok::If,
        "else" => Tok::Else,
        "const" => Tok::Const,
        "true" => Tok::True,
        "false" => Tok::False,
        "as" => Tok::As,
        "None" => Tok::None,
        _ => return None,
    })
}

type LexResult<'a, T> = IResult<&'a str, T>;

/// Whitespace and comments. An unterminated block comment is reported by the caller.
fn trivia(i: &str) -> LexResult<'_, &str> {
    alt((
        take_while1(char::is_whitespace),
        recognize(pair(tag("//"), take_while(|c| c != '\n'))),
        recognize((tag("/*"), take_until("*/"), tag("*/"))),
    ))
    .parse(i)
}

fn ident(i: &str) -> LexResult<'_, &str> {
    recognize(pair(
        take_while1(|c: char| c.is_ascii_alphabetic() || c == '_'),
        take_while(|c: char| c.is_ascii_alphanumeric() || c == '_'),
    ))
    .parse(i)
}

fn digits(i: &str) -> LexResult<'_, &str> {
    recognize(pair(
        digit1,
        take_while(|c: char| c.is_ascii_digit() || c == '_'),
    ))
    .parse(i)
}

/// `1.5`, `1e-5`, `2.0e3` (a digit must follow the dot, so `0..n` is a range).
fn float(i: &str) -> LexResult<'_, &str> {
    let exponent = || recognize((one_of("eE"), opt(one_of("+-")), digit1));
    alt((
        recognize((digits, char('.'), digits, opt(exponent()))),
        recognize(pair(digits, exponent())),
    ))
    .parse(i)
}

fn hex(i: &str) -> LexResult<'_, &str> {
    recognize(pair(
        alt((tag("0x"), tag("0X"))),
        take_while1(|c: char| c.is_ascii_hexdigit() || c == '_'),
    ))
    .parse(i)
}

fn punct(i: &str) -> LexResult<'_, Tok> {
    // Longest first: two-character operators before their one-character prefixes.
    let two = alt((
        tag("..").map(|_| Tok::DotDot),
        tag("->").map(|_| Tok::Arrow),
        tag("==").map(|_| Tok::EqEq),
        tag("!=").map(|_| Tok::Ne),
        tag("<=").map(|_| Tok::Le),
        tag(">=").map(|_| Tok::Ge),
        tag("&&").map(|_| Tok::AmpAmp),
        tag("||").map(|_| Tok::PipePipe),
        tag("<<").map(|_| Tok::Shl),
        tag(">>").map(|_| Tok::Shr),
        tag("+=").map(|_| Tok::PlusEq),
        tag("-=").map(|_| Tok::MinusEq),
        tag("*=").map(|_| Tok::StarEq),
        tag("/=").map(|_| Tok::SlashEq),
        tag("%=").map(|_| Tok::PercentEq),
    ));
    let one = one_of("()[]{},:;=<>+-*/%&|^!").map(|c| match c {
        '(' => Tok::LParen,
        ')' => Tok::RParen,
        '[' => Tok::LBracket,
        ']' => Tok::RBracket,
        '{' => Tok::LBrace,
        '}' => Tok::RBrace,
        ',' => Tok::Comma,
        ':' => Tok::Colon,
        ';' => Tok::Semi,
        '=' => Tok::Eq,
        '<' => Tok::Lt,
        '>' => Tok::Gt,
        '+' => Tok::Plus,
        '-' => Tok::Minus,
        '*' => Tok::Star,
        '/' => Tok::Slash,
        '%' => Tok::Percent,
        '&' => Tok::Amp,
        '|' => Tok::Pipe,
        '^' => Tok::Caret,
        _ => Tok::Bang,
    });
    alt((two, one)).parse(i)
}

/// Split `src` into tokens (ending with [`Tok::Eof`]) and lexical diagnostics.
pub fn lex(src: &str) -> (Vec<Token>, Vec<Diagnostic>) {
    let mut toks = Vec::new();
    let mut diags = Vec::new();
    let mut rest = src;
    let off = |r: &str| src.len() - r.len();
    while !rest.is_empty() {
        let start = off(rest);
        if let Ok((r, _)) = trivia(rest) {
            rest = r;
            continue;
        }
        if rest.starts_with("/*") {
            diags.push(
                Diagnostic::new(
                    Code::UnterminatedComment,
                    "unterminated block comment",
                    Span::new(start, start + 2),
                )
                .with_hint("close the comment with `*/`"),
            );
            rest = "";
            continue;
        }
        // Dispatch on the first character: only one family of token can start there.
        let first = rest.chars().next().unwrap_or(' ');
        let (r, tok) = if !first.is_ascii_digit() {
            if let Ok((r, text)) = ident(rest) {
                (
                    r,
                    keyword(text).unwrap_or_else(|| Tok::Ident(text.to_string())),
                )
            } else if let Ok((r, t)) = punct(rest) {
                (r, t)
            } else {
                // Unknown character: report it, skip it (a whole UTF-8 character).
                let len = first.len_utf8();
                diags.push(
                    Diagnostic::new(
                        Code::UnknownChar,
                        format!("unexpected character `{}`", first.escape_debug()),
                        Span::new(start, start + len),
                    )
                    .with_label("not part of the language"),
                );
                rest = &rest[len..];
                continue;
            }
        } else if let Ok((r, text)) = hex(rest) {
            let digits: String = text[2..].chars().filter(|&c| c != '_').collect();
            match i64::from_str_radix(&digits, 16) {
                Ok(v) => (r, Tok::Int(v)),
                Err(_) => {
                    diags.push(bad_number(text, start));
                    (r, Tok::Int(0))
                }
            }
        } else if let Ok((r, text)) = float(rest) {
            let clean: String = text.chars().filter(|&c| c != '_').collect();
            match clean.parse::<f64>() {
                // Every float type is at most f32: a literal must be finite there.
                Ok(v) if v.is_finite() && !(v as f32).is_finite() => {
                    diags.push(
                        Diagnostic::new(
                            Code::BadNumber,
                            format!("float literal `{text}` is out of the f32 range"),
                            Span::new(start, start + text.len()),
                        )
                        .with_label("rounds to an infinity in f32")
                        .with_hint("the largest finite f32 is about 3.4e38; there are no infinite constants: for a masked-off or \"minus infinity\" start value use a large finite one such as `-1.0e30`"),
                    );
                    (r, Tok::Float(0.0))
                }
                Ok(v) if v.is_finite() => (r, Tok::Float(v)),
                _ => {
                    diags.push(bad_number(text, start));
                    (r, Tok::Float(0.0))
                }
            }
        } else if let Ok((r, text)) = digits(rest) {
            let clean: String = text.chars().filter(|&c| c != '_').collect();
            match clean.parse::<i64>() {
                Ok(v) => (r, Tok::Int(v)),
                Err(_) => {
                    diags.push(bad_number(text, start));
                    (r, Tok::Int(0))
                }
            }
        } else {
            // Unreachable: `digits` matches whenever the first character is a digit.
            (&rest[first.len_utf8()..], Tok::Int(0))
        };
        // An identifier glued to a number (`12ab`) is a malformed literal.
        if matches!(tok, Tok::Int(_) | Tok::Float(_)) {
            if let Ok((r2, tail)) = ident(r) {
                let end = off(r2);
                diags.push(
                    Diagnostic::new(
                        Code::BadNumber,
                        format!("invalid suffix `{tail}` on number literal"),
                        Span::new(start, end),
                    )
                    .with_hint("write a cast instead, e.g. `1.0 as bf16`"),
                );
                toks.push(Token {
                    tok,
                    span: Span::new(start, end),
                });
                rest = r2;
                continue;
            }
        }
        toks.push(Token {
            tok,
            span: Span::new(start, off(r)),
        });
        rest = r;
    }
    toks.push(Token {
        tok: Tok::Eof,
        span: Span::new(src.len(), src.len()),
    });
    (toks, diags)
}

fn bad_number(text: &str, start: usize) -> Diagnostic {
    Diagnostic::new(
        Code::BadNumber,
        format!("invalid number literal `{text}`"),
        Span::new(start, start + text.len()),
    )
    .with_label("does not fit in 64 bits")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<Tok> {
        lex(s).0.into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn ranges_and_floats() {
        assert_eq!(
            kinds("0..n"),
            vec![Tok::Int(0), Tok::DotDot, Tok::Ident("n".into()), Tok::Eof]
        );
        assert_eq!(
            kinds("1.5e-3 2e3"),
            vec![Tok::Float(1.5e-3), Tok::Float(2e3), Tok::Eof]
        );
        assert_eq!(
            kinds("a<=b // c\n/* d */ x"),
            vec![
                Tok::Ident("a".into()),
                Tok::Le,
                Tok::Ident("b".into()),
                Tok::Ident("x".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn bad_input_is_reported() {
        let (_, d) = lex("a $ b /* open");
        assert_eq!(d.len(), 2);
    }
}
