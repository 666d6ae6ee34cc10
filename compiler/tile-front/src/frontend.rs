//! Front end façade: source text → parsed, resolved [`Program`] → checked,
//! optimised TIR per specialisation. This is the API the rest of the tool chain
//! (driver, interpreter tests, codegen, packs) uses.

use crate::check;
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::syntax::{self, ast};
use tile_ir as tir;
pub use tile_ir::SourceFile;
use tile_ir::Span;

/// A parsed module whose items (kernels, helpers, tune blocks) resolved without error.
#[derive(Clone, Debug)]
pub struct Program {
    module: ast::Module,
    warnings: Diagnostics,
}

/// Parse `src` and resolve its items. Fails with every syntax and item-level
/// error, or with E0040 alone when the file was not valid UTF-8.
pub fn parse_program(src: &SourceFile) -> Result<Program, Diagnostics> {
    if let Some(d) = encoding_error(src) {
        return Err(d.into());
    }
    let (module, diags) = syntax::parse(&src.text);
    let mut all = Diagnostics(diags);
    all.extend(check::check_items(&module));
    if !all.is_empty() {
        return Err(all);
    }
    let mut warnings = Diagnostics::new();
    if check::kernels(&module).next().is_none() {
        warnings.push(no_kernel(&module));
    }
    Ok(Program { module, warnings })
}

/// E0040 for a file read from bytes that are not UTF-8 (see
/// [`SourceFile::from_bytes`]), at the first bad byte.
pub fn encoding_error(src: &SourceFile) -> Option<Diagnostic> {
    let bad = src.invalid_utf8?;
    // The lossy text agrees with the file up to the first bad byte, which it
    // shows as U+FFFD (3 bytes): the caret goes there.
    let more = match bad.count {
        0 | 1 => String::new(),
        n => format!(
            " (and {} more invalid sequence{})",
            n - 1,
            if n == 2 { "" } else { "s" }
        ),
    };
    Some(
        Diagnostic::new(
            Code::InvalidUtf8,
            format!(
                "the file is not valid UTF-8: byte 0x{:02X} at byte offset {}{more}",
                bad.byte, bad.offset
            ),
            Span::new(bad.offset, bad.offset + '\u{FFFD}'.len_utf8()),
        )
        .with_label("not UTF-8 (shown as \u{FFFD})")
        .with_hint(
            "source files are UTF-8 text: re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or delete the byte",
        ),
    )
}

/// W0001: nothing in the file would be checked or compiled.
fn no_kernel(module: &ast::Module) -> Diagnostic {
    let (message, hint) = if module.items.is_empty() {
        (
            "the file defines no kernel: it is empty (only whitespace and comments)",
            "a .tile file holds kernels, helper functions and tune blocks; is this the file you meant?",
        )
    } else {
        (
            "the file defines no kernel, so nothing in it is checked or compiled",
            "helpers are checked only where a kernel calls them: add a kernel that calls them",
        )
    };
    Diagnostic::new(Code::NoKernel, message, Span::default()).with_hint(hint)
}

impl Program {
    /// Warnings about the file as a whole (`W…` codes), e.g. W0001 when it
    /// defines no kernel: printed by `tilec check`, which still succeeds.
    pub fn warnings(&self) -> &Diagnostics {
        &self.warnings
    }

    /// The AST (for `--emit ast` and tools).
    pub fn module(&self) -> &ast::Module {
        &self.module
    }

    /// Kernel names in source order.
    pub fn kernel_names(&self) -> Vec<String> {
        check::kernels(&self.module)
            .map(|k| k.name.name.clone())
            .collect()
    }

    /// Meta-parameters of `kernel` with their defaults (empty for an unknown kernel).
    pub fn meta_params(&self, kernel: &str) -> Vec<(String, Option<i64>)> {
        check::find_kernel(&self.module, kernel)
            .map(check::meta_params)
            .unwrap_or_default()
    }

    /// The kernel's `tune` block, if it has one.
    pub fn tune_space(&self, kernel: &str) -> Option<tir::TuneSpace> {
        check::tune_space(&self.module, kernel)
    }

    /// Check + `passes::optimize` + verify. `meta` gives a value for every
    /// meta-parameter without a default (and may override defaults).
    pub fn specialize(
        &self,
        kernel: &str,
        meta: &[(String, i64)],
    ) -> Result<tir::Kernel, Diagnostics> {
        let mut k = check::elaborate(&self.module, kernel, meta)?;
        crate::passes::optimize(&mut k).map_err(|e| {
            Diagnostics::from(Diagnostic::new(
                Code::Internal,
                format!("internal compiler error: {e}"),
                Span::default(),
            ))
        })?;
        Ok(k)
    }

    /// The kernels of this program as a pack holds them without PTX: each
    /// with every config of its tune block (as `tilec pack` plans them: a
    /// kernel without one gets 4 warps, a meta-parameter a block leaves out
    /// its default) specialised to TIR, which is what the CPU interpreter
    /// runs from a pack. `source` is the program's text, hashed into each
    /// kernel as `tilec pack` does. Tests of packs and of the tools that read
    /// them build such packs, so they run without LLVM or a GPU.
    pub fn tir_pack_kernels(
        &self,
        source: &SourceFile,
    ) -> Result<Vec<tir::pack::PackedKernel>, Diagnostics> {
        let mut kernels = Vec::new();
        for name in self.kernel_names() {
            let tune = self.tune_space(&name).unwrap_or_else(|| tir::TuneSpace {
                warps: vec![4],
                ..tir::TuneSpace::default()
            });
            let defaults: Vec<(String, i64)> = self
                .meta_params(&name)
                .into_iter()
                .filter(|(n, _)| !tune.params.iter().any(|(t, _)| t == n))
                .filter_map(|(n, d)| Some((n, d?)))
                .collect();
            let variants = tune
                .configs()
                .into_iter()
                .map(|mut config| {
                    config.meta.extend(defaults.iter().cloned());
                    Ok(tir::pack::Variant {
                        tir: self.specialize(&name, &config.meta)?,
                        config,
                        ptx: Default::default(),
                        shared_bytes: Default::default(),
                        tma: Default::default(),
                        waits_for_prior_grid: Default::default(),
                    })
                })
                .collect::<Result<Vec<_>, Diagnostics>>()?;
            let Some(first) = variants.first() else {
                continue;
            };
            kernels.push(tir::pack::PackedKernel {
                name,
                signature: first.tir.signature(),
                tune,
                source_hash: tir::pack::sha256_hex(source.text.as_bytes()),
                variants,
            });
        }
        Ok(kernels)
    }

    /// The meta-parameter assignments `tilec check` tries for `kernel`: every
    /// distinct point of its tune space, else just the defaults.
    pub fn check_configs(&self, kernel: &str) -> Vec<Vec<(String, i64)>> {
        let mut out: Vec<Vec<(String, i64)>> = Vec::new();
        if let Some(space) = self.tune_space(kernel) {
            for c in space.configs() {
                if !out.contains(&c.meta) {
                    out.push(c.meta);
                }
            }
        }
        if out.is_empty() {
            out.push(vec![]);
        }
        out
    }

    /// Check every kernel with every configuration of [`Program::check_configs`];
    /// the diagnostics of all of them, each reported once (see
    /// [`merge_config_diagnostics`]).
    pub fn check_all(&self) -> Diagnostics {
        let mut all = Diagnostics::new();
        for k in self.kernel_names() {
            let runs: Vec<_> = self
                .check_configs(&k)
                .into_iter()
                .map(|meta| {
                    let d = self.specialize(&k, &meta).err().unwrap_or_default();
                    (meta, d)
                })
                .collect();
            all.extend(merge_config_diagnostics(runs));
        }
        all
    }

    /// Like [`Program::specialize`] but without the optimisation passes
    /// (the checker's direct output, for tests and `--emit tir --no-opt`).
    pub fn specialize_unoptimized(
        &self,
        kernel: &str,
        meta: &[(String, i64)],
    ) -> Result<tir::Kernel, Diagnostics> {
        check::elaborate(&self.module, kernel, meta)
    }
}

/// Meta-parameter values of one configuration, by name.
pub type Meta = Vec<(String, i64)>;

/// The diagnostics of one kernel checked in several configurations (each
/// `(meta, diagnostics)`), each error reported once. An error that only some
/// of the configurations have gets a note naming the first of them
/// (`in tune configuration NBITS = 32`, plus how many others), so that an
/// error in one tune value can be traced to it.
pub fn merge_config_diagnostics(runs: Vec<(Meta, Diagnostics)>) -> Diagnostics {
    let total = runs.len();
    // (diagnostic, its first configuration, how many configurations had it)
    let mut found: Vec<(Diagnostic, Meta, usize)> = Vec::new();
    for (meta, d) in runs {
        for x in d {
            match found
                .iter_mut()
                .find(|(y, _, _)| y.code == x.code && y.span == x.span && y.message == x.message)
            {
                Some(f) => f.2 += 1,
                None => found.push((x, meta.clone(), 1)),
            }
        }
    }
    let mut out = Diagnostics::new();
    for (mut d, meta, n) in found {
        if total > 1 && n < total && !meta.is_empty() {
            let cfg = meta
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            let more = match n - 1 {
                0 => String::new(),
                1 => " (and 1 other configuration)".to_string(),
                m => format!(" (and {m} other configurations)"),
            };
            d.notes.push(format!("in tune configuration {cfg}{more}"));
        }
        out.push(d);
    }
    out
}
