//! `mhc-train` from the command line: bad flags, bad data and bad run
//! directories end with a clear message and a non-zero exit, never a panic.

use std::process::Command;

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

#[test]
fn ctrl_c_pauses_with_a_checkpoint() {
    let dir = temp_dir("sigint");
    let out = dir.join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_mhc-train"))
        .args([
            "train",
            "--device",
            "cpu",
            "--residual",
            "plain",
            "--layers",
            "1",
            "--width",
            "16",
        ])
        .args([
            "--heads",
            "2",
            "--context",
            "8",
            "--batch",
            "2",
            "--steps",
            "100000",
            "--no-progress",
        ])
        .arg("--out")
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mhc-train starts");
    // Wait until it has taken a few steps.
    let metrics = out.join("metrics.jsonl");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count()) < 3 {
        assert!(
            start.elapsed().as_secs() < 60,
            "no training steps within a minute"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert!(
        stderr.contains("interrupted") && stderr.contains("paused at step"),
        "{stderr}"
    );
    let ck = mhc_train::train::checkpoint::Checkpoint::load(&out.join("checkpoint.safetensors"))
        .unwrap();
    assert!(ck.step >= 3 && ck.step < 100000);
    std::fs::remove_dir_all(&dir).unwrap();
}
