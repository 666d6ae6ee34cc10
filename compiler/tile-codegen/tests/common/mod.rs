//! Helpers of the tests that read the PTX of a kernel: compile a `.tile`
//! text at given meta-parameters, and cut out the loop that holds a given
//! instruction.

use tile_codegen::{compile, Artifacts, Options};
use tile_front::frontend::{parse_program, SourceFile};

/// PTX (Hopper, the default options) of `kernel` of the `.tile` text `text`
/// (named `path` in diagnostics) at `meta` (none: the tune block's first
/// configuration) with `warps` warps.
#[allow(dead_code)]
pub fn ptx_of(path: &str, text: &str, kernel: &str, meta: &[(&str, i64)], warps: u32) -> String {
    artifacts_of(path, text, kernel, meta, warps).ptx
}

/// Everything [`ptx_of`]'s compilation produced.
pub fn artifacts_of(
    path: &str,
    text: &str,
    kernel: &str,
    meta: &[(&str, i64)],
    warps: u32,
) -> Artifacts {
    let opts = Options {
        warps,
        ..Options::default()
    };
    artifacts_with(path, text, kernel, meta, &opts)
}

/// [`artifacts_of`] with any options (another target, …).
pub fn artifacts_with(
    path: &str,
    text: &str,
    kernel: &str,
    meta: &[(&str, i64)],
    opts: &Options,
) -> Artifacts {
    let src = SourceFile::new(path, text);
    let program = parse_program(&src).map_err(|d| d.render(&src)).unwrap();
    let meta: Vec<(String, i64)> = if meta.is_empty() {
        program
            .check_configs(kernel)
            .into_iter()
            .next()
            .unwrap_or_default()
    } else {
        meta.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    let tir = program
        .specialize(kernel, &meta)
        .map_err(|d| d.render(&src))
        .unwrap();
    compile(&tir, opts).unwrap()
}

/// PTX of `kernel` of a file of the repository (`rel`: from its root).
#[allow(dead_code)]
pub fn file_ptx(rel: &str, kernel: &str, meta: &[(&str, i64)], warps: u32) -> String {
    file_artifacts(rel, kernel, meta, warps).ptx
}

/// Everything [`file_ptx`]'s compilation produced.
#[allow(dead_code)]
pub fn file_artifacts(rel: &str, kernel: &str, meta: &[(&str, i64)], warps: u32) -> Artifacts {
    let opts = Options {
        warps,
        ..Options::default()
    };
    file_artifacts_with(rel, kernel, meta, &opts)
}

/// [`file_artifacts`] with any options (another target, …).
#[allow(dead_code)]
pub fn file_artifacts_with(
    rel: &str,
    kernel: &str,
    meta: &[(&str, i64)],
    opts: &Options,
) -> Artifacts {
    let path = format!("{}/../../{rel}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    artifacts_with(&path, &text, kernel, meta, opts)
}

/// The lines of the innermost loop whose body holds a line containing
/// `holding`: from its label to the last branch back to it. A branch back
/// from beyond a loop into its middle is a slow path laid out after the loop
/// returning (its span starts inside the loop and ends past it), not a loop.
#[allow(dead_code)]
pub fn innermost_loop<'a>(ptx: &'a str, holding: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = ptx.lines().map(str::trim).collect();
    let mut spans = Vec::new();
    for (end, l) in lines.iter().enumerate() {
        let Some(target) = l
            .split("bra")
            .nth(1)
            .map(|t| t.trim().trim_end_matches(';'))
        else {
            continue;
        };
        if let Some(start) = lines[..end]
            .iter()
            .position(|x| x.strip_suffix(':') == Some(target))
        {
            spans.push((start, end));
        }
    }
    let returns =
        |&(s, e): &(usize, usize)| spans.iter().any(|&(s2, e2)| s2 < s && s <= e2 && e2 < e);
    let (s, e) = spans
        .iter()
        .filter(|sp| !returns(sp) && lines[sp.0..=sp.1].iter().any(|x| x.contains(holding)))
        .min_by_key(|(s, e)| e - s)
        .copied()
        .unwrap_or_else(|| panic!("no loop holds `{holding}`"));
    lines[s..=e].to_vec()
}

/// How many of `lines` contain `what`.
#[allow(dead_code)]
pub fn count(lines: &[&str], what: &str) -> usize {
    lines.iter().filter(|l| l.contains(what)).count()
}
