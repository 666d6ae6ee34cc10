//! File tests (cranelift's `.clif` filetests, naga's in/out): every file under
//! `tests/filetests/` is one test, its kind named in a header comment, its
//! expected output inside the file after the `// ==== expected ====` marker,
//! one `// `-prefixed line per output line (so a `.tile` file stays a valid
//! source). `BLESS=1 cargo test -p tilec --test filetests` rewrites the
//! expectations of the files that differ.
//!
//! Header lines (leading `//` comments; other comment lines are free text):
//! - `// test: passes` — `.tile` input; the TIR from the checker and after each
//!   pass of `tile_front::passes::PASSES` (`(unchanged)` where a pass did nothing).
//! - `// test: pass <name>` — `.tir` input (`tile_ir::parse_kernel`); that one
//!   pass run alone; the TIR after it.
//! - `// test: mlir [sm_90|sm_80]` — `.tile` input; the MLIR built from the
//!   optimised TIR (`Artifacts::mlir`), before the MLIR pass pipeline.
//! - `// test: ptx [sm_90|sm_80]` — `.tile` input; the PTX.
//! - `// config: BLOCK=256 warps=4` — meta-parameter values (and the codegen's
//!   warps per CTA, default 4) for `.tile` inputs.
//! - `// kernel: <name>` — which kernel of the file (default: the first).
//! - `// filter: <text>|<text>…` — keep only output lines containing one of the
//!   fixed strings (like `grep -F`), trimmed; for long MLIR/PTX.

use std::fmt::Write as _;
use std::path::Path;
use tile_codegen::{compile, Arch, Options};
use tile_front::frontend::{parse_program, SourceFile};
use tile_front::passes;

const MARKER: &str = "// ==== expected ====";
const BLESS: &str = "BLESS=1 cargo test -p tilec --test filetests";

/// A file split into its header settings, its input and its expectation.
struct FileTest {
    kind: Vec<String>,
    config: Vec<(String, i64)>,
    warps: u32,
    stages: Option<u32>,
    ctas: Option<u32>,
    kernel: Option<String>,
    filters: Vec<String>,
    /// Everything before the marker, as written.
    input: String,
    /// The expected output (marker's `// ` prefixes removed), if any.
    expected: Option<String>,
}

fn parse_file(text: &str) -> Result<FileTest, String> {
    let (input, expected) = match text.find(MARKER) {
        Some(i) => {
            let rest = &text[i + MARKER.len()..];
            let mut exp = String::new();
            for line in rest.lines().skip(1) {
                let l = line
                    .strip_prefix("// ")
                    .or_else(|| line.strip_prefix("//"))
                    .ok_or_else(|| format!("expected line without `//`: {line:?}"))?;
                exp.push_str(l);
                exp.push('\n');
            }
            (&text[..i], Some(exp))
        }
        None => (text, None),
    };
    let mut t = FileTest {
        kind: vec![],
        config: vec![],
        warps: 4,
        stages: None,
        ctas: None,
        kernel: None,
        filters: vec![],
        input: input.to_string(),
        expected,
    };
    for line in input.lines() {
        let Some(c) = line.strip_prefix("//") else {
            break;
        };
        let c = c.trim();
        if let Some(v) = c.strip_prefix("test:") {
            t.kind = v.split_whitespace().map(str::to_string).collect();
        } else if let Some(v) = c.strip_prefix("config:") {
            for kv in v.split_whitespace() {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("config entry `{kv}` is not NAME=VALUE"))?;
                let v: i64 = v
                    .parse()
                    .map_err(|_| format!("config value `{v}` is not an integer"))?;
                if k == "warps" {
                    t.warps = u32::try_from(v).map_err(|_| format!("bad warps {v}"))?;
                } else if k == "stages" {
                    t.stages = Some(u32::try_from(v).map_err(|_| format!("bad stages {v}"))?);
                } else if k == "ctas" {
                    t.ctas = Some(u32::try_from(v).map_err(|_| format!("bad ctas {v}"))?);
                } else {
                    t.config.push((k.to_string(), v));
                }
            }
        } else if let Some(v) = c.strip_prefix("kernel:") {
            t.kernel = Some(v.trim().to_string());
        } else if let Some(v) = c.strip_prefix("filter:") {
            t.filters
                .extend(v.trim().split('|').map(|s| s.trim().to_string()));
        }
    }
    if t.kind.is_empty() {
        return Err("no `// test: <kind>` header line".into());
    }
    Ok(t)
}

/// The optimised or raw TIR of the file's kernel.
fn specialize(t: &FileTest, path: &Path, optimised: bool) -> Result<tile_ir::Kernel, String> {
    let src = SourceFile::new(path.display().to_string(), t.input.clone());
    let program = parse_program(&src).map_err(|d| d.render(&src))?;
    let name = match &t.kernel {
        Some(k) => k.clone(),
        None => program
            .kernel_names()
            .into_iter()
            .next()
            .ok_or("the file has no kernel")?,
    };
    let k = if optimised {
        program.specialize(&name, &t.config)
    } else {
        program.specialize_unoptimized(&name, &t.config)
    };
    k.map_err(|d| d.render(&src))
}

fn arch(t: &FileTest) -> Result<Arch, String> {
    match t.kind.get(1) {
        None => Ok(Arch::Sm90),
        Some(a) => Arch::parse(a).ok_or_else(|| format!("unknown arch `{a}`")),
    }
}

fn run_test(t: &FileTest, path: &Path) -> Result<String, String> {
    let out = match t.kind[0].as_str() {
        "passes" => {
            let mut k = specialize(t, path, false)?;
            tile_ir::verify(&k).map_err(|e| format!("checker output: {e}"))?;
            let mut out = String::new();
            let mut last = tile_ir::print_kernel(&k);
            let _ = writeln!(out, "after check\n{last}");
            for (name, run) in passes::PASSES {
                run(&mut k);
                tile_ir::verify(&k).map_err(|e| format!("after {name}: {e}"))?;
                let now = tile_ir::print_kernel(&k);
                if now == last {
                    let _ = writeln!(out, "after {name}: (unchanged)\n");
                } else {
                    let _ = writeln!(out, "after {name}\n{now}");
                }
                last = now;
            }
            out
        }
        "pass" => {
            let name = t.kind.get(1).ok_or("`test: pass` needs a pass name")?;
            let run = passes::pass(name).ok_or_else(|| format!("no pass named `{name}`"))?;
            // Header lines become blank lines, so parse errors point at file lines.
            let text: String = t
                .input
                .lines()
                .map(|l| if l.starts_with("//") { "" } else { l })
                .collect::<Vec<_>>()
                .join("\n");
            let mut k =
                tile_ir::parse_kernel(&text).map_err(|e| format!("{}:{e}", path.display()))?;
            tile_ir::verify(&k).map_err(|e| format!("input: {e}"))?;
            run(&mut k);
            tile_ir::verify(&k).map_err(|e| format!("after {name}: {e}"))?;
            tile_ir::print_kernel(&k)
        }
        "mlir" | "ptx" => {
            let k = specialize(t, path, true)?;
            let opts = Options {
                arch: arch(t)?,
                warps: t.warps,
                stages: t.stages,
                ctas: t.ctas,
                dump_passes: false,
                keep_ir: true,
            };
            let art = compile(&k, &opts).map_err(|e| e.to_string())?;
            if t.kind[0] == "mlir" {
                art.mlir
            } else {
                art.ptx
            }
        }
        other => return Err(format!("unknown test kind `{other}`")),
    };
    Ok(filter(&out, &t.filters))
}

fn filter(text: &str, filters: &[String]) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if filters.is_empty() {
            out.push_str(line.trim_end());
            out.push('\n');
        } else if filters.iter().any(|f| line.contains(f.as_str())) {
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    out
}

/// The file with `expected` after the marker.
fn blessed(t: &FileTest, expected: &str) -> String {
    let mut s = t.input.trim_end().to_string();
    s.push_str("\n\n");
    s.push_str(MARKER);
    s.push('\n');
    for line in expected.lines() {
        if line.is_empty() {
            s.push_str("//\n");
        } else {
            let _ = writeln!(s, "// {line}");
        }
    }
    s
}

/// A line diff (longest common subsequence), `-` expected, `+` actual, with
/// three lines of context around changes.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near = |k: usize| {
        ops[k.saturating_sub(3)..(k + 4).min(ops.len())]
            .iter()
            .any(|(c, _)| *c != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (c, l)) in ops.iter().enumerate() {
        if near(k) {
            if skipped {
                out.push_str("   ...\n");
                skipped = false;
            }
            let _ = writeln!(out, "{c}  {l}");
        } else {
            skipped = true;
        }
    }
    out
}

#[test]
fn filetests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests");
    let paths = tile_testkit::files_below(&root, &["tile", "tir"]);
    assert!(!paths.is_empty(), "no file tests under {}", root.display());
    let bless = std::env::var_os("BLESS").is_some_and(|v| v != "0");
    let mut failures = Vec::new();
    for path in &paths {
        let shown = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        let text = std::fs::read_to_string(path).expect("readable file test");
        let t = match parse_file(&text) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let actual = match run_test(&t, path) {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{shown}: {e}"));
                continue;
            }
        };
        if t.expected.as_deref() == Some(actual.as_str()) {
            continue;
        }
        if bless {
            std::fs::write(path, blessed(&t, &actual)).expect("writable file test");
            eprintln!("blessed {shown}");
        } else {
            match &t.expected {
                None => failures.push(format!("{shown}: no expected output yet")),
                Some(e) => failures.push(format!(
                    "{shown}: output differs (- expected, + actual):\n{}",
                    diff(e, &actual)
                )),
            }
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {} file tests failed:\n\n{}\n\nIf the new output is right: {BLESS}",
            failures.len(),
            paths.len(),
            failures.join("\n\n")
        );
    }
}
