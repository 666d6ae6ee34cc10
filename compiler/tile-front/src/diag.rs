//! Diagnostics: stable error codes, spans, and a deterministic rustc-style renderer.
//!
//! Every user-facing error of the front end is a [`Diagnostic`] with a stable
//! [`Code`]. [`Diagnostics::render`] prints them plain (no colours, no terminal
//! width detection) so the output is identical everywhere and can be snapshotted:
//!
//! ```text
//! error[E0007]: undefined name `y`
//!   --> k.tile:3:13
//!    |
//!  3 |     let z = y + 1;
//!    |             ^ not found in this scope
//!    |
//!    = help: …
//! ```

use std::fmt;
use tile_ir::SourceFile;
use tile_ir::Span;

macro_rules! codes {
    ($($name:ident = $code:literal : $desc:literal,)*) => {
        /// Stable codes: errors `E…`, then warnings `W…`. Never renumber: add
        /// new codes at the end of their kind.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $($name,)* }
        impl Code {
            /// Every code, in numeric order.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];
            /// `E0001`, …
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$name => $code,)* }
            }
            /// One line saying what the code is about (for docs/LANGUAGE.md).
            pub fn description(self) -> &'static str {
                match self { $(Code::$name => $desc,)* }
            }
        }
    };
}

codes! {
    UnknownChar = "E0001": "a character that is not part of the language",
    BadNumber = "E0002": "a malformed or out-of-range number literal",
    UnterminatedComment = "E0003": "a `/*` comment without its `*/`",
    Syntax = "E0004": "a syntax error: something else was expected here",
    TooDeep = "E0005": "nesting too deep (expressions, blocks or helper calls)",
    DuplicateItem = "E0006": "two items (kernels, helpers or tune blocks) with the same name",
    DuplicateParam = "E0007": "two parameters or meta-parameters with the same name",
    UnknownType = "E0008": "an unknown type name",
    UndefinedName = "E0009": "a name that is not defined",
    UnknownFunction = "E0010": "a call to a function that is neither a builtin nor a helper",
    ArgCount = "E0011": "a call with the wrong number of arguments",
    TypeMismatch = "E0012": "operand types that do not fit the operation",
    ShapeMismatch = "E0013": "tile shapes that cannot be broadcast together or do not fit",
    NotPowerOfTwo = "E0014": "a tile dimension that is not a power of two (or a tile too large)",
    NotConst = "E0015": "a value that must be known at compile time but is not",
    ImmutableAssign = "E0016": "assignment to a variable not declared `let mut`",
    LoopCarriedType = "E0017": "a variable whose type changes inside a loop or branch",
    BadCondition = "E0018": "a condition that is not a scalar `i1`",
    BadMask = "E0019": "a load/store mask that is not `i1` with the pointer's shape",
    BadOther = "E0020": "a load `other` value that does not fit the loaded tile",
    BadStoreValue = "E0021": "a stored value whose type does not fit the pointer",
    NotPointer = "E0022": "memory access through something that is not a pointer",
    BadPointerArith = "E0023": "an operation on pointers other than adding an integer offset",
    BadAxis = "E0024": "a reduction, program or index axis out of range",
    BadDot = "E0025": "`dot` operands of the wrong shapes or types",
    BadCast = "E0026": "an impossible cast",
    BadReshape = "E0027": "a reshape, transpose or broadcast_to to an incompatible shape",
    BadIndex = "E0028": "an index expression other than `:` and `None`",
    RecursiveHelper = "E0029": "a helper function that calls itself",
    NoValue = "E0030": "an expression without a value used as a value",
    BadTune = "E0031": "a malformed tune block",
    MetaParam = "E0032": "a missing, unknown or invalid meta-parameter value",
    ConstEval = "E0033": "compile-time arithmetic that overflows or divides by zero",
    BadArgument = "E0034": "a builtin argument of the wrong kind (shape, dtype, axis)",
    FloatOnly = "E0035": "a math function applied to an integer tile",
    UnknownKernel = "E0036": "a kernel name that is not defined in the file",
    Internal = "E0037": "an internal compiler error (a bug: please report it)",
    ShiftRange = "E0038": "a shift by a constant amount outside `0..width` of the type",
    DivByZero = "E0039": "a division or remainder of a run-time value by a constant zero",
    InvalidUtf8 = "E0040": "a source file that is not valid UTF-8",
    NoKernel = "W0001": "a file that defines no kernel (empty, only comments or only helpers)",
}

impl Code {
    /// Warnings (`W…`) are printed but do not fail a check; every other code is an error.
    pub fn is_warning(self) -> bool {
        self.as_str().starts_with('W')
    }
    /// `error` or `warning`, as rendered before the code.
    pub fn severity(self) -> &'static str {
        if self.is_warning() {
            "warning"
        } else {
            "error"
        }
    }
}

/// One diagnostic. `labels` holds extra spans with text; a label whose span is
/// `span` annotates the primary caret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    pub span: Span,
    pub hint: Option<String>,
    pub labels: Vec<(Span, String)>,
    /// Extra lines after the help (`= note: …`), e.g. the tune configuration.
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn new(code: Code, message: impl Into<String>, span: Span) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            span,
            hint: None,
            labels: Vec::new(),
            notes: Vec::new(),
        }
    }
    /// Text under the primary caret.
    pub fn with_label(mut self, text: impl Into<String>) -> Diagnostic {
        self.labels.push((self.span, text.into()));
        self
    }
    /// A secondary span with its text.
    pub fn with_secondary(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.labels.push((span, text.into()));
        self
    }
    pub fn with_note(mut self, text: impl Into<String>) -> Diagnostic {
        self.notes.push(text.into());
        self
    }
    pub fn with_hint(mut self, text: impl Into<String>) -> Diagnostic {
        self.hint = Some(text.into());
        self
    }
}

/// A list of diagnostics, in the order they were found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn new() -> Diagnostics {
        Diagnostics(Vec::new())
    }
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }
    /// Render every diagnostic against its source, rustc style, without colours.
    pub fn render(&self, src: &SourceFile) -> String {
        let mut out = String::new();
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            render_one(&mut out, d, src);
        }
        out
    }
}

impl Diagnostic {
    /// The same diagnostic as a `miette` report bound to its source, for callers
    /// that want miette's handlers (colours, terminal width, links).
    pub fn to_miette(&self, src: &SourceFile) -> miette::Report {
        let span = |s: Span| {
            miette::SourceSpan::from((s.start as usize, (s.end.saturating_sub(s.start)) as usize))
        };
        let mut labels = Vec::new();
        let primary = self
            .labels
            .iter()
            .find(|(s, _)| *s == self.span)
            .map(|(_, t)| t.clone());
        labels.push(miette::LabeledSpan::new_primary_with_span(
            primary,
            span(self.span),
        ));
        for (s, t) in &self.labels {
            if *s != self.span {
                labels.push(miette::LabeledSpan::new_with_span(
                    Some(t.clone()),
                    span(*s),
                ));
            }
        }
        let mut d = miette::MietteDiagnostic::new(self.message.clone())
            .with_code(self.code.as_str())
            .with_severity(if self.code.is_warning() {
                miette::Severity::Warning
            } else {
                miette::Severity::Error
            })
            .with_labels(labels);
        let mut help: Vec<String> = self.hint.iter().cloned().collect();
        help.extend(self.notes.iter().map(|n| format!("note: {n}")));
        if !help.is_empty() {
            d = d.with_help(help.join("\n"));
        }
        miette::Report::new(d)
            .with_source_code(miette::NamedSource::new(src.name.clone(), src.text.clone()))
    }
}

impl Diagnostics {
    /// Render through miette's graphical handler (Unicode, no colours, 100
    /// columns: deterministic as well; `tilec check --fancy`).
    pub fn render_fancy(&self, src: &SourceFile) -> String {
        let handler =
            miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
                .with_width(100);
        let mut out = String::new();
        for d in &self.0 {
            let report = d.to_miette(src);
            if handler.render_report(&mut out, report.as_ref()).is_err() {
                out.push_str(&format!(
                    "{}[{}]: {}\n",
                    d.code.severity(),
                    d.code.as_str(),
                    d.message
                ));
            }
        }
        out
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Diagnostics {
        Diagnostics(vec![d])
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}[{}]: {} (at bytes {}..{})",
                d.code.severity(),
                d.code.as_str(),
                d.message,
                d.span.start,
                d.span.end
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Line index (0-based) and column (1-based, in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = clamp_to_char(text, offset);
    let before = &text[..offset];
    let line = before.matches('\n').count();
    let line_start = before.rfind('\n').map(|p| p + 1).unwrap_or(0);
    (line, text[line_start..offset].chars().count() + 1)
}

fn clamp_to_char(text: &str, mut offset: usize) -> usize {
    offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The text of line `line` (0-based) with tabs expanded to 4 spaces.
fn line_text(text: &str, line: usize) -> String {
    text.split('\n')
        .nth(line)
        .unwrap_or("")
        .trim_end_matches('\r')
        .replace('\t', "    ")
}

/// Display column (0-based) of character column `col` (1-based) on `line`, tabs expanded.
fn display_col(text: &str, line: usize, col: usize) -> usize {
    let raw = text.split('\n').nth(line).unwrap_or("");
    raw.chars()
        .take(col.saturating_sub(1))
        .map(|c| if c == '\t' { 4 } else { 1 })
        .sum()
}

fn render_one(out: &mut String, d: &Diagnostic, src: &SourceFile) {
    use std::fmt::Write;
    let text = &src.text;
    let _ = writeln!(
        out,
        "{}[{}]: {}",
        d.code.severity(),
        d.code.as_str(),
        d.message
    );
    let (pl, pc) = line_col(text, d.span.start as usize);
    // Annotated spans: the primary one first, then secondary labels.
    let mut marks: Vec<(Span, Option<&str>, bool)> = Vec::new();
    let primary_label = d
        .labels
        .iter()
        .find(|(s, _)| *s == d.span)
        .map(|(_, t)| t.as_str());
    marks.push((d.span, primary_label, true));
    for (s, t) in &d.labels {
        if *s != d.span {
            marks.push((*s, Some(t.as_str()), false));
        }
    }
    let lines: Vec<usize> = marks
        .iter()
        .map(|(s, _, _)| line_col(text, s.start as usize).0)
        .collect();
    let width = lines
        .iter()
        .map(|l| (l + 1).to_string().len())
        .max()
        .unwrap_or(1);
    let pad = " ".repeat(width);
    let _ = writeln!(out, "{pad}--> {}:{}:{}", src.name, pl + 1, pc);
    let _ = writeln!(out, "{pad} |");
    let mut order: Vec<usize> = (0..marks.len()).collect();
    order.sort_by_key(|&i| (lines[i], marks[i].0.start, i));
    let mut last_line = None;
    for i in order {
        let (span, label, primary) = marks[i];
        let line = lines[i];
        if last_line != Some(line) {
            if let Some(prev) = last_line {
                if line > prev + 1 {
                    let _ = writeln!(out, "{pad} ...");
                }
            }
            let _ = writeln!(out, "{:>width$} | {}", line + 1, line_text(text, line));
        }
        last_line = Some(line);
        let (_, c0) = line_col(text, span.start as usize);
        let (l1, c1) = line_col(text, span.end as usize);
        let start = display_col(text, line, c0);
        let end = if l1 == line {
            display_col(text, line, c1)
        } else {
            line_text(text, line).len()
        };
        let n = end.saturating_sub(start).max(1);
        let ch = if primary { "^" } else { "-" };
        let mut mark = format!("{pad} | {}{}", " ".repeat(start), ch.repeat(n));
        if let Some(l) = label {
            mark.push(' ');
            mark.push_str(l);
        }
        let _ = writeln!(out, "{}", mark.trim_end());
    }
    if d.hint.is_some() || !d.notes.is_empty() {
        let _ = writeln!(out, "{pad} |");
    }
    if let Some(h) = &d.hint {
        let _ = writeln!(out, "{pad} = help: {h}");
    }
    for n in &d.notes {
        let _ = writeln!(out, "{pad} = note: {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_ordered() {
        let names: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        let errors = names.iter().filter(|n| n.starts_with('E')).count();
        for (i, n) in names.iter().enumerate() {
            let want = if i < errors {
                format!("E{:04}", i + 1)
            } else {
                format!("W{:04}", i - errors + 1)
            };
            assert_eq!(*n, want);
        }
    }

    #[test]
    fn warnings_render_as_warnings() {
        let src = SourceFile::new("k.tile", "");
        let d = Diagnostic::new(Code::NoKernel, "no kernel", Span::new(0, 0));
        assert!(!Code::InvalidUtf8.is_warning());
        let r = Diagnostics::from(d).render(&src);
        assert!(
            r.starts_with("warning[W0001]: no kernel\n --> k.tile:1:1"),
            "{r}"
        );
    }

    #[test]
    fn renders_through_miette() {
        let src = SourceFile::new("k.tile", "let z = y + 1;\n");
        let d = Diagnostic::new(Code::UndefinedName, "undefined name `y`", Span::new(8, 9))
            .with_label("not found");
        let r = Diagnostics::from(d).render_fancy(&src);
        assert!(
            r.contains("E0009") && r.contains("k.tile:1:9") && r.contains("not found"),
            "{r}"
        );
    }

    #[test]
    fn renders_caret() {
        let src = SourceFile::new("k.tile", "let a = 1;\nlet z = y + 1;\n");
        let d = Diagnostic::new(Code::UndefinedName, "undefined name `y`", Span::new(19, 20))
            .with_label("not found in this scope")
            .with_hint("define it first");
        let r = Diagnostics::from(d).render(&src);
        assert_eq!(
            r,
            "error[E0009]: undefined name `y`\n --> k.tile:2:9\n  |\n2 | let z = y + 1;\n  |         ^ not found in this scope\n  |\n  = help: define it first\n"
        );
    }
}
