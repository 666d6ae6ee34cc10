//! `tile-bench --only` keeps exactly the rows whose benchmark and config
//! contain its text (checked on `--dry-run`, which launches the attention
//! kernels on the CPU interpreter, so this runs anywhere).

mod common;

use std::process::Command;

/// The table rows (`| benchmark | config | …`) `tile-bench --dry-run`
/// prints with `--only only`, as "benchmark config".
fn dry_run_rows(only: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let pack = common::tir_pack(
        dir.path(),
        "attention.tpack",
        &[
            "dsl-examples/attention.tile",
            "dsl-examples/attention_bwd.tile",
        ],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tile-bench"))
        .arg("--pack")
        .arg(&pack)
        .args(["--dry-run", "--only", only])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tile-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| l.starts_with("| attention"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            format!("{} {}", cells[0], cells[1])
        })
        .collect()
}

#[test]
fn only_keeps_the_rows_that_contain_its_text() {
    // Forward + backward chains of one causal shape: a row per chain, the
    // deterministic backward's and the fused one's.
    let rows = dry_run_rows("fwd+bwd causal 2×3h×130×64");
    assert!(!rows.is_empty(), "no row kept");
    for r in &rows {
        assert!(r.contains("fwd+bwd causal 2×3h×130×64"), "kept {r}");
    }
    for step in ["; dkdv ", "; fused "] {
        assert!(rows.iter().any(|r| r.contains(step)), "no chain with{step}");
    }
    // One forward config: its rows at the one shape that matches.
    let only = "fwd 2×3h×130×64 bf16 BM=128, BN=64, D=64, CAUSAL=0, warps=4";
    let rows = dry_run_rows(only);
    assert_eq!(rows, vec![format!("attention {only}")]);
}
