//! Syntax: source text → tokens ([`lexer`]) → AST with spans ([`parser`], nom 8).
//!
//! Entry point: [`parse`]. It always returns a module (possibly partial) plus the
//! diagnostics found; it never panics and bounds its recursion depth.

pub mod ast;
pub mod lexer;
pub mod parser;

use crate::diag::Diagnostic;

/// Lex and parse a whole file.
pub fn parse(src: &str) -> (ast::Module, Vec<Diagnostic>) {
    let (tokens, mut diags) = lexer::lex(src);
    let (module, pdiags) = parser::parse_tokens(&tokens);
    diags.extend(pdiags);
    (module, diags)
}
