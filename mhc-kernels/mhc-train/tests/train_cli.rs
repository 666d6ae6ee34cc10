//! `mhc-train` from the command line: bad flags, bad data and bad run
//! directories end with a clear message and a non-zero exit, never a panic.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// The exit status of a run paused by Ctrl-C or SIGTERM (docs/TRAINER.md).
const PAUSED: i32 = 3;

fn mhc_train(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mhc-train"))
        .args(args)
        .output()
        .expect("mhc-train runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "mhc-train panicked on {args:?}:\n{stderr}"
    );
    (out.status.success(), stderr)
}

/// The smallest model there is: a plain one-layer width-16 GPT, context 8,
/// batch 2 (milliseconds per step on the interpreter).
const TINY: &[&str] = &[
    "train",
    "--device",
    "cpu",
    "--residual",
    "plain",
    "--layers",
    "1",
    "--width",
    "16",
    "--heads",
    "2",
    "--context",
    "8",
    "--batch",
    "2",
    "--eval-batches",
    "1",
    "--no-progress",
];

/// [`TINY`] into `out` with `extra` flags: (success, exit code, stderr).
fn tiny(out: &Path, extra: &[&str]) -> (bool, Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mhc-train"))
        .args(TINY)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("mhc-train runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.success(), out.status.code(), stderr)
}

fn ckpt(dir: &Path) -> PathBuf {
    dir.join("checkpoint.safetensors")
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("mhc-train-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn bad_flags_are_refused() {
    let cases: &[(&[&str], &str)] = &[
        (&["train", "--residual", "bogus"], "invalid value 'bogus'"),
        (&["train", "--steps", "ten"], "invalid value 'ten'"),
        (&["train", "--no-such-flag"], "unexpected argument"),
        (
            &["train", "--width", "10", "--heads", "3", "--device", "cpu"],
            "multiple of --heads",
        ),
        (
            &["train", "--steps", "0", "--device", "cpu"],
            "--steps and --batch must be positive",
        ),
        (
            &["train", "--val-fraction", "1.5", "--device", "cpu"],
            "--val-fraction",
        ),
        (
            &["train", "--streams", "3", "--device", "cpu"],
            "--streams must be 2, 4 or 8",
        ),
        (
            &["train", "--ranks", "3", "--batch", "4", "--device", "cpu"],
            "--batch 4 is not a multiple of --ranks 3",
        ),
        (
            &["train", "--collective", "nccl", "--device", "cpu"],
            "--collective nccl needs GPUs",
        ),
        (
            &["train", "--device", "gpu", "--ranks", "64", "--batch", "64"],
            "--ranks 64 needs 64 GPUs, this machine has",
        ),
        (&["train", "--collective", "mpi"], "invalid value 'mpi'"),
        (&["frobnicate"], "unrecognized subcommand"),
        // Issue 22.5: nonsense that used to run.
        (
            &["train", "--mlp-ratio", "0", "--device", "cpu"],
            "--mlp-ratio must be positive",
        ),
        (&["train", "--clip=-1", "--device", "cpu"], "--clip must be"),
        (
            &["train", "--weight-decay=-5", "--device", "cpu"],
            "--weight-decay must be",
        ),
        (
            &["train", "--adam-eps=-1", "--device", "cpu"],
            "--adam-eps must be",
        ),
        (
            &["train", "--packs", "/nonexistent", "--device", "cpu"],
            "--packs `/nonexistent` is not a directory",
        ),
        (
            &["train", "--stop-after", "0", "--device", "cpu"],
            "--stop-after must be at least 1",
        ),
        (
            &[
                "train",
                "--residual",
                "plain",
                "--recompute",
                "--device",
                "cpu",
            ],
            "--recompute applies to --residual hc and mhc only",
        ),
        (
            &["train", "--resume", "--overwrite", "--device", "cpu"],
            "contradict",
        ),
    ];
    for (args, want) in cases {
        let (ok, err) = mhc_train(args);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: expected `{want}` in:\n{err}");
    }
}

#[test]
fn unreadable_data_is_refused() {
    let dir = temp_dir("data");
    let out = dir.join("run");
    let out = out.to_str().unwrap();
    // (file, contents to write first or none, expected message)
    let cases: [(&str, Option<&[u8]>, &str); 3] = [
        ("missing.txt", None, "cannot read data file"),
        (
            "binary.txt",
            Some(&[0x66, 0x6f, 0xff, 0xfe, 0x00]),
            "not UTF-8",
        ),
        ("tiny.txt", Some(b"too short"), "fewer than one window"),
    ];
    for (name, contents, want) in cases {
        let data = dir.join(name);
        if let Some(bytes) = contents {
            std::fs::write(&data, bytes).unwrap();
        }
        let (ok, err) = mhc_train(&[
            "train",
            "--device",
            "cpu",
            "--out",
            out,
            "--data",
            data.to_str().unwrap(),
        ]);
        assert!(!ok && err.contains(want), "{name}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_without_checkpoint_and_plot_without_metrics_are_refused() {
    let dir = temp_dir("resume");
    let d = dir.to_str().unwrap();
    let (ok, err) = mhc_train(&["train", "--device", "cpu", "--out", d, "--resume"]);
    assert!(!ok && err.contains("cannot read checkpoint"), "{err}");
    let (ok, err) = mhc_train(&["plot", d]);
    assert!(!ok && err.contains("cannot read metrics file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 22.1: a checkpoint with one flipped bit is refused on --resume,
/// naming the file and the tensor, and left as it was.
#[test]
fn a_corrupted_checkpoint_is_refused() {
    let dir = temp_dir("corrupt");
    let (ok, _, err) = tiny(&dir, &["--steps", "2", "--stop-after", "1"]);
    assert!(ok, "{err}");
    let mut bytes = std::fs::read(ckpt(&dir)).unwrap();
    // The last byte belongs to the last tensor of the payload.
    let n = bytes.len();
    bytes[n - 1] ^= 0x10;
    std::fs::write(ckpt(&dir), &bytes).unwrap();
    let (ok, _, err) = tiny(&dir, &["--steps", "2", "--resume"]);
    assert!(!ok, "a corrupted checkpoint was accepted:\n{err}");
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("is corrupted: tensor `"),
        "{err}"
    );
    assert_eq!(std::fs::read(ckpt(&dir)).unwrap(), bytes);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 22.4: a run directory without a checkpoint but with a run's files
/// is not overwritten unless --overwrite is given.
#[test]
fn an_existing_run_is_not_overwritten() {
    let dir = temp_dir("overwrite");
    let metrics = dir.join("metrics.jsonl");
    std::fs::write(&metrics, "{\"step\":0}\n").unwrap();
    let (ok, _, err) = tiny(&dir, &["--steps", "1"]);
    assert!(
        !ok && err.contains("already holds a run") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&metrics).unwrap(), "{\"step\":0}\n");
    let (ok, _, err) = tiny(&dir, &["--steps", "1", "--overwrite"]);
    assert!(ok, "{err}");
    // And a checkpoint: --overwrite starts over too.
    let (ok, _, err) = tiny(&dir, &["--steps", "1"]);
    assert!(!ok && err.contains("already holds a checkpoint"), "{err}");
    let (ok, _, err) = tiny(&dir, &["--steps", "1", "--overwrite"]);
    assert!(ok, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 22.2: resuming with other data or another split is refused, naming
/// the setting, and the run's files are left alone.
#[test]
fn resume_with_other_data_is_refused() {
    let dir = temp_dir("resume-data");
    let out = dir.join("run");
    let (ok, _, err) = tiny(&out, &["--steps", "2", "--stop-after", "1"]);
    assert!(ok, "{err}");
    let config = std::fs::read(out.join("config.json")).unwrap();
    let other = dir.join("other.txt");
    std::fs::write(&other, "the cat sees the dog. ".repeat(100)).unwrap();
    let other = other.to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (&["--data", other], "--data differs"),
        (&["--val-fraction", "0.5"], "--val-fraction differs"),
        (&["--clip", "0.5"], "--clip differs"),
    ];
    for (flags, want) in cases {
        let mut args = vec!["--steps", "2", "--resume"];
        args.extend_from_slice(flags);
        let (ok, _, err) = tiny(&out, &args);
        assert!(!ok && err.contains(want), "{flags:?}: {err}");
        assert_eq!(std::fs::read(out.join("config.json")).unwrap(), config);
    }
    // Issue 22.5: a --stop-after the resumed run never reaches.
    let (ok, _, err) = tiny(&out, &["--steps", "2", "--resume", "--stop-after", "1"]);
    assert!(!ok && err.contains("--stop-after 1 is not after"), "{err}");
    let (ok, _, err) = tiny(&out, &["--steps", "2", "--resume"]);
    assert!(ok, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 22.6: an output directory the run cannot write into is refused
/// before the model is built, naming it.
#[cfg(target_os = "linux")]
#[test]
fn an_unwritable_run_directory_is_named() {
    // /proc/self exists and takes no new files, whoever runs the test.
    let (ok, _, err) = tiny(Path::new("/proc/self"), &["--steps", "1"]);
    assert!(!ok, "{err}");
    assert!(err.contains("`/proc/self` is not writable"), "{err}");
    assert!(
        !err.contains("parameters"),
        "the model was built first:\n{err}"
    );
}

/// Issue 22.7: a torn last line of metrics.jsonl does not block --resume;
/// the checkpoint's step decides what is kept.
#[test]
fn a_torn_metrics_line_is_tolerated_on_resume() {
    let dir = temp_dir("torn");
    let (ok, _, err) = tiny(&dir, &["--steps", "3", "--stop-after", "2"]);
    assert!(ok, "{err}");
    let metrics = dir.join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    text.push_str("{\"step\":2,\"loss\":5.");
    std::fs::write(&metrics, text).unwrap();
    let (ok, _, err) = tiny(&dir, &["--steps", "3", "--resume"]);
    assert!(ok, "{err}");
    let steps: Vec<u64> = mhc_train::train::metrics::read_records(&metrics)
        .unwrap()
        .iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, [0, 1, 2]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 22.7: a closed stderr (`mhc-train … 2>&1 | head`) is no panic: a
/// run still finishes (0) and an error still exits 1.
#[test]
fn a_closed_stderr_is_not_a_panic() {
    let dir = temp_dir("pipe");
    let run = |extra: &[&str]| -> ExitStatus {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Command::new(env!("CARGO_BIN_EXE_mhc-train"))
            .args(TINY)
            .arg("--out")
            .arg(&dir)
            .args(extra)
            .stderr(writer)
            .status()
            .unwrap()
    };
    assert_eq!(run(&["--steps", "1"]).code(), Some(0));
    assert_eq!(run(&["--steps", "0"]).code(), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 22.8: two identical runs write byte-identical checkpoints.
#[test]
fn identical_runs_write_identical_checkpoints() {
    let dir = temp_dir("identical");
    let (a, b) = (dir.join("a"), dir.join("b"));
    for d in [&a, &b] {
        let (ok, _, err) = tiny(d, &["--steps", "2"]);
        assert!(ok, "{err}");
    }
    assert!(std::fs::read(ckpt(&a)).unwrap() == std::fs::read(ckpt(&b)).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A child process killed (and reaped) however the test ends, so a failed
/// assertion never leaves a 100,000-step run behind.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start a long run, wait until it has logged three steps (bounded by its
/// progress, not a clock: a child that dies ends the wait with its log),
/// send `signal`, and check that it pauses with a checkpoint and exits
/// with the paused status (issue 22.3, issue 26.7).
fn signal_pauses_with_a_checkpoint(signal: &str, name: &str) {
    let dir = temp_dir(name);
    let out = dir.join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_mhc-train"))
        .args(TINY)
        .args(["--steps", "100000", "--log-every", "1", "--out"])
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .expect("mhc-train starts");
    let mut child = Reaper(child);
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let mut steps = 0;
    while steps < 3 {
        match lines.next() {
            Some(Ok(line)) => {
                steps += usize::from(line.starts_with("step "));
                log += &line;
                log.push('\n');
            }
            _ => panic!("mhc-train stopped before three steps:\n{log}"),
        }
    }
    let kill = Command::new("kill")
        .args([signal, &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    for line in lines.map_while(Result::ok) {
        log += &line;
        log.push('\n');
    }
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(PAUSED), "{log}");
    assert!(
        log.contains("interrupted") && log.contains("paused at step"),
        "{log}"
    );
    let ck = mhc_train::train::checkpoint::Checkpoint::load(&ckpt(&out)).unwrap();
    assert!(ck.step >= 3 && ck.step < 100000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_pauses_with_a_checkpoint() {
    signal_pauses_with_a_checkpoint("-INT", "sigint");
}

/// Issue 22.3: SIGTERM (what `kill`, systemd and schedulers send) pauses
/// like Ctrl-C instead of losing the work since the last checkpoint.
#[test]
fn sigterm_pauses_with_a_checkpoint() {
    signal_pauses_with_a_checkpoint("-TERM", "sigterm");
}

/// `train --preset gpt1b --residual <residual> --batch 100000` (10⁸ tokens a
/// step, which fits in no host's memory) on the CPU with `extra` flags: the
/// plan must refuse it before any allocation; its stderr.
fn refused_1b_run(out: &str, residual: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "train",
        "--preset",
        "gpt1b",
        "--residual",
        residual,
        "--batch",
        "100000",
        "--device",
        "cpu",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    let (ok, stderr) = mhc_train(&args);
    assert!(!ok && stderr.contains("does not fit"), "{stderr}");
    stderr
}

/// A preset sets the model and schedule; flags on the command line win: the
/// refused plan has the preset's width in its numbers and a smaller batch
/// as the hint.
#[test]
fn a_preset_yields_to_the_flags_given() {
    let dir = temp_dir("preset");
    let stderr = refused_1b_run(dir.to_str().unwrap(), "mhc", &[]);
    // Tokens of 100000 sequences of 1024 (the preset's context), the MLP
    // hidden 4 × 2048 wide (its width): 8.4 · 10¹¹ elements, and the plan's
    // largest tensor is at least that.
    let largest: usize = stderr
        .split("largest tensor is the ")
        .nth(1)
        .and_then(|s| s.split(" (").nth(1))
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no largest tensor: {stderr}"));
    assert!(largest >= 100_000 * 1024 * 4 * 2048, "{stderr}");
    // A smaller batch, or none where the host cannot hold the weights.
    let hint = stderr
        .split("hint: --batch ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse::<usize>().ok());
    assert!(
        hint.is_some_and(|b| b < 100_000) || stderr.contains("no --batch fits"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The 1 B preset recomputes hc/mhc streams (`--recompute 0`) unless told
/// otherwise: its refused plan is the one `--recompute 0` gives, and not
/// the one of another block length.
#[test]
fn the_1b_preset_recomputes_hyper_connection_streams() {
    let dir = temp_dir("preset-recompute");
    let out = dir.to_str().unwrap();
    let plan = |extra: &[&str]| {
        let stderr = refused_1b_run(out, "hc", extra);
        stderr
            .split("memory plan")
            .nth(1)
            .and_then(|s| s.split(" needs ").next())
            .unwrap_or_else(|| panic!("no plan: {stderr}"))
            .to_string()
    };
    let preset = plan(&[]);
    assert_eq!(preset, plan(&["--recompute", "0"]));
    assert_ne!(preset, plan(&["--recompute", "1"]));
    let _ = std::fs::remove_dir_all(&dir);
}
