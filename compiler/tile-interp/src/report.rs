//! Rendering of interpreter errors against the kernel's source text.

use super::InterpError;
use std::fmt::Write;
use tile_ir::Span;

/// 0-based line and 1-based character column of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count();
    let start = before.rfind('\n').map_or(0, |p| p + 1);
    (line, text[start..offset].chars().count() + 1)
}

fn headline(e: &InterpError) -> (String, Option<String>) {
    match e {
        InterpError::OutOfBounds {
            kernel,
            op,
            program_id,
            index,
            len,
            param,
            lane,
            ..
        } => {
            let what = param
                .as_deref()
                .map_or_else(|| "a buffer".to_string(), |p| format!("`{p}`"));
            (
                format!(
                    "out-of-bounds {op}: element index {index} of {what}, which has {len} elements"
                ),
                Some(format!(
                    "in kernel `{kernel}`, program ({}, {}, {}), tile element {lane}",
                    program_id[0], program_id[1], program_id[2]
                )),
            )
        }
        InterpError::BadStep {
            kernel,
            program_id,
            step,
            ..
        } => (
            format!("`for` loop with step {step}: the step must be positive"),
            Some(format!(
                "in kernel `{kernel}`, program ({}, {}, {})",
                program_id[0], program_id[1], program_id[2]
            )),
        ),
        InterpError::Malformed {
            kernel, message, ..
        } => (
            format!("malformed TIR: {message}"),
            Some(format!("in kernel `{kernel}`")),
        ),
        other => (other.to_string(), None),
    }
}

/// See [`InterpError::render`].
pub(crate) fn render(e: &InterpError, file: &str, src: &str) -> String {
    let (head, label) = headline(e);
    let mut out = format!("error: {head}\n");
    let span = e
        .span()
        .filter(|s| *s != Span::default() && (s.start as usize) <= src.len());
    let Some(span) = span else {
        let _ = writeln!(out, " --> {file}");
        if let Some(l) = label {
            let _ = writeln!(out, "  = note: {l}");
        }
        return out;
    };
    let (line, col) = line_col(src, span.start as usize);
    let (eline, ecol) = line_col(src, span.end as usize);
    let text = src
        .split('\n')
        .nth(line)
        .unwrap_or("")
        .trim_end_matches('\r');
    let expand = |s: &str| s.replace('\t', "    ");
    let prefix: String = text.chars().take(col - 1).collect();
    let start = expand(&prefix).chars().count();
    let end = if eline == line {
        let upto: String = text.chars().take(ecol.saturating_sub(1)).collect();
        expand(&upto).chars().count()
    } else {
        expand(text).chars().count()
    };
    let width = (line + 1).to_string().len();
    let pad = " ".repeat(width);
    let _ = writeln!(out, "{pad}--> {file}:{}:{col}", line + 1);
    let _ = writeln!(out, "{pad} |");
    let _ = writeln!(out, "{} | {}", line + 1, expand(text));
    let carets = "^".repeat(end.saturating_sub(start).max(1));
    let mark = match &label {
        Some(l) => format!("{pad} | {}{carets} {l}", " ".repeat(start)),
        None => format!("{pad} | {}{carets}", " ".repeat(start)),
    };
    let _ = writeln!(out, "{}", mark.trim_end());
    if let InterpError::OutOfBounds { .. } = e {
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(
            out,
            "{pad} = help: mask the access (e.g. `offs < n`) or fix the offset computation"
        );
    }
    out
}
