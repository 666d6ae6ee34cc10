//! Loading kernels from a pack (`tile_ir::pack` defines and validates the format).

use crate::{Device, Kernel, RuntimeError};
use std::path::Path;
use tile_ir::pack::{PackError, PackManifest, PackedKernel, Variant};
use tile_ir::Config;

/// A validated kernel pack.
pub struct Pack {
    manifest: PackManifest,
}

impl Pack {
    /// Read and validate a pack (magic, format version, length, hash, compiler
    /// version). A pack compiled from other compiler sources than this binary's
    /// (`tile_ir::VERSION` ends in their fingerprint) is refused with
    /// [`PackError::StaleCompiler`], naming both versions and `scripts/packs`;
    /// `TILE_ALLOW_FOREIGN_PACK=1` loads it anyway with a warning.
    pub fn load(path: &Path) -> Result<Pack, PackError> {
        Ok(Pack {
            manifest: PackManifest::read(path)?,
        })
    }

    pub fn manifest(&self) -> &PackManifest {
        &self.manifest
    }

    pub fn kernel(&self, name: &str) -> Result<&PackedKernel, RuntimeError> {
        self.manifest.kernel(name).ok_or_else(|| {
            let names: Vec<&str> = self
                .manifest
                .kernels
                .iter()
                .map(|k| k.name.as_str())
                .collect();
            RuntimeError::Launch {
                kernel: name.into(),
                message: format!("not in the pack (it holds: {})", names.join(", ")),
            }
        })
    }

    /// The variant of `name` with exactly this config; a config without
    /// `stages` or `ctas` (a caller that does not tune them) otherwise takes
    /// the first variant with its other values (the tune block's first
    /// `stages` and `ctas`).
    pub fn variant(&self, name: &str, config: &Config) -> Result<&Variant, RuntimeError> {
        let k = self.kernel(name)?;
        let same_where_named = |v: &&Variant| {
            (config.stages.is_none() || config.stages == v.config.stages)
                && (config.ctas.is_none() || config.ctas == v.config.ctas)
                && v.config.meta == config.meta
                && v.config.warps == config.warps
        };
        k.variants
            .iter()
            .find(|v| &v.config == config)
            .or_else(|| k.variants.iter().find(same_where_named))
            .ok_or_else(|| RuntimeError::Launch {
                kernel: name.into(),
                message: format!(
                    "config {} is not in the pack (it holds {} configs, e.g. {})",
                    describe(config),
                    k.variants.len(),
                    k.variants
                        .first()
                        .map(|v| describe(&v.config))
                        .unwrap_or_default()
                ),
            })
    }

    /// Load one variant onto a device: on a GPU the PTX that [`choose_target`]
    /// picks for its compute capability (restricted by `TILE_ARCH`, see
    /// [`parse_arch_override`]), with the shared-memory size and TMA operands
    /// compiled for that same target; TIR on the CPU.
    pub fn load_kernel(
        &self,
        device: &Device,
        name: &str,
        config: &Config,
    ) -> Result<Kernel, RuntimeError> {
        let v = self.variant(name, config)?;
        let sig = v.tir.signature();
        let grid = self.kernel(name)?.tune.grid.clone();
        let kernel = match device {
            Device::Cuda(_) => {
                let key = select_ptx(&v.ptx, gpu_cc(device)?, arch_override()?.as_deref())
                    .map_err(|e| RuntimeError::Launch {
                        kernel: name.into(),
                        message: e.to_string(),
                    })?;
                let shared = v.shared_bytes.get(key).copied().unwrap_or(0);
                let tma = v.tma.get(key).cloned().unwrap_or_default();
                device
                    .load_ptx(&v.ptx[key], sig, config.warps, shared, tma)?
                    .with_prior_grid_wait(v.waits_for_prior_grid.contains(key))
            }
            Device::Cpu => device.load_tir(v.tir.clone(), config.warps)?,
        };
        let disjoint = tile_ir::aliasing::disjoint_params(&v.tir, v.config.stages.is_some());
        Ok(kernel
            .with_grid(grid, config.meta.clone())
            .with_disjoint(disjoint))
    }

    /// The PTX target (as the PTX declares it: `sm_90a`, `sm_80`) that
    /// [`Pack::load_kernel`] takes on `device`, judged by the pack's first
    /// variant (`tilec pack --arch` builds every variant for the same targets);
    /// `None` on the CPU or for an empty pack.
    pub fn ptx_target(&self, device: &Device) -> Result<Option<String>, RuntimeError> {
        let Some(v) = self
            .manifest
            .kernels
            .iter()
            .flat_map(|k| &k.variants)
            .next()
        else {
            return Ok(None);
        };
        if !device.is_gpu() {
            return Ok(None);
        }
        let key = select_ptx(&v.ptx, gpu_cc(device)?, arch_override()?.as_deref())
            .map_err(|e| RuntimeError::Unsupported(e.to_string()))?;
        Ok(Some(
            declared_target(&v.ptx[key]).unwrap_or(key).to_string(),
        ))
    }
}

fn gpu_cc(device: &Device) -> Result<(u32, u32), RuntimeError> {
    device
        .compute_capability()?
        .ok_or_else(|| RuntimeError::Unsupported("the CPU device runs no PTX".into()))
}

/// The environment variable naming the PTX target(s) the runtime may load on
/// a GPU: `TILE_ARCH=sm_80` takes the sm_80 (A100) PTX on any device that can
/// run it, e.g. an H200; a list (`sm_90,sm_80`) lets [`choose_target`] pick
/// among those. Unset or empty: every target of the pack. The same variable
/// tells `scripts/packs` which targets to build.
pub const TILE_ARCH: &str = "TILE_ARCH";

/// Why no PTX of a pack is loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// No target of the pack runs on the device.
    #[error("{}", no_target_message(available, *device_cc))]
    NoTarget {
        /// The PTX targets the pack has (as declared: `sm_90a`, `sm_80`).
        available: Vec<String>,
        device_cc: (u32, u32),
    },
    /// `TILE_ARCH` is malformed, or names targets the pack lacks or the
    /// device cannot run.
    #[error("{TILE_ARCH}=`{value}`: {reason}")]
    Override { value: String, reason: String },
}

/// How widely a PTX target runs; at equal compute capability the more
/// specific one is preferred (it may use instructions the others cannot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TargetKind {
    /// `sm_80`: runs (JIT-compiled by the driver) on this compute capability and every later one.
    Plain,
    /// `sm_100f`: runs on this compute capability and the later minor versions of its major.
    Family,
    /// `sm_90a`: arch-specific (`wgmma`, `setmaxnreg`), runs on exactly this compute capability.
    ArchSpecific,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Target {
    cc: (u32, u32),
    kind: TargetKind,
}

/// `sm_90a` → 9.0 arch-specific, `sm_86` → 8.6, `sm_120` → 12.0; `None` for
/// anything else.
fn parse_target(name: &str) -> Option<Target> {
    let rest = name.strip_prefix("sm_")?;
    let (digits, kind) = match rest.as_bytes().last()? {
        b'a' => (&rest[..rest.len() - 1], TargetKind::ArchSpecific),
        b'f' => (&rest[..rest.len() - 1], TargetKind::Family),
        _ => (rest, TargetKind::Plain),
    };
    if !(2..=4).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (major, minor) = digits.split_at(digits.len() - 1);
    Some(Target {
        cc: (major.parse().ok()?, minor.parse().ok()?),
        kind,
    })
}

impl Target {
    fn runs_on(self, cc: (u32, u32)) -> bool {
        match self.kind {
            TargetKind::Plain => self.cc <= cc,
            TargetKind::Family => self.cc.0 == cc.0 && self.cc.1 <= cc.1,
            TargetKind::ArchSpecific => self.cc == cc,
        }
    }

    /// `runs on compute capability 9.0 only`.
    fn where_it_runs(self) -> String {
        let (major, minor) = self.cc;
        match self.kind {
            TargetKind::Plain => format!("runs on compute capability {major}.{minor} and later"),
            TargetKind::Family => {
                format!("runs on compute capability {major}.{minor} to {major}.9")
            }
            TargetKind::ArchSpecific => {
                format!("runs on compute capability {major}.{minor} only")
            }
        }
    }
}

fn describe_targets(available: &[String]) -> String {
    if available.is_empty() {
        return "no PTX at all".into();
    }
    available
        .iter()
        .map(|t| match parse_target(t) {
            Some(p) => format!("{t} ({})", p.where_it_runs()),
            None => format!("{t} (not a PTX target)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn no_target_message(available: &[String], (major, minor): (u32, u32)) -> String {
    let has = describe_targets(available);
    let hint = if (major, minor) < (8, 0) {
        "; this project supports compute capability 8.0 and later (A100 on): its lowest target is sm_80"
            .to_string()
    } else {
        let arch = if (major, minor) == (9, 0) {
            "sm_90"
        } else {
            "sm_80"
        };
        format!(
            "; hint: rebuild the pack with a target this GPU can run: \
             `TILE_ARCH={arch} bash scripts/packs` or `tilec pack DIR --arch {arch}` \
             (sm_80 PTX runs on every GPU of compute capability 8.0 and later)"
        )
    };
    format!(
        "no PTX in the pack runs on this GPU (compute capability {major}.{minor}): it has {has}{hint}"
    )
}

/// The best PTX target a GPU of compute capability `device_cc` can run, out of
/// `available` (target names as the PTX declares them: `sm_80`, `sm_90a`):
/// an exact match if there is one, else the highest target the driver can
/// JIT-compile for the device (a plain `sm_XY` with XY ≤ the device's compute
/// capability). An arch-specific target (`sm_90a`, which our sm_90 PTX is:
/// `wgmma`, TMA) runs on its own compute capability only, never on another.
/// Names that are not PTX targets are skipped.
pub fn choose_target<'a>(
    available: &[&'a str],
    device_cc: (u32, u32),
) -> Result<&'a str, TargetError> {
    available
        .iter()
        .filter_map(|&name| Some((name, parse_target(name)?)))
        .filter(|(_, t)| t.runs_on(device_cc))
        .max_by_key(|(_, t)| (t.cc, t.kind))
        .map(|(name, _)| name)
        .ok_or_else(|| TargetError::NoTarget {
            available: available.iter().map(|s| s.to_string()).collect(),
            device_cc,
        })
}

/// `TILE_ARCH`'s value: `None` when empty, else the named targets (pack
/// names like `sm_80`, `sm_90`, or the PTX's own like `sm_90a`), checked.
pub fn parse_arch_override(value: &str) -> Result<Option<Vec<String>>, TargetError> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    let bad = |reason: String| TargetError::Override {
        value: value.into(),
        reason,
    };
    let mut names = Vec::new();
    for item in value.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(bad(
                "an empty entry; name targets separated by commas, e.g. `sm_90,sm_80`".into(),
            ));
        }
        if parse_target(item).is_none() {
            return Err(bad(format!(
                "`{item}` is not a PTX target; expected `sm_` and a compute capability, \
                 e.g. `sm_80` (the A100 path, runs on 8.0 and later) or `sm_90` (the Hopper path), \
                 or a comma-separated list of them"
            )));
        }
        names.push(item.to_string());
    }
    Ok(Some(names))
}

/// `TILE_ARCH` from the environment (see [`parse_arch_override`]).
fn arch_override() -> Result<Option<Vec<String>>, RuntimeError> {
    let value = match std::env::var(TILE_ARCH) {
        Ok(v) => v,
        Err(std::env::VarError::NotPresent) => return Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => v.to_string_lossy().into_owned(),
    };
    parse_arch_override(&value).map_err(|e| RuntimeError::Unsupported(e.to_string()))
}

/// The target a PTX text declares (`.target sm_90a`), from its header.
fn declared_target(ptx: &str) -> Option<&str> {
    ptx.lines()
        .take(64)
        .find_map(|l| l.trim().strip_prefix(".target"))
        .and_then(|rest| rest.split([',', ' ', '\t']).find(|w| !w.is_empty()))
}

/// The key of `ptx` (a variant's PTX by pack target: `sm_90`, `sm_80`) to
/// load on a GPU of compute capability `cc`, by [`choose_target`] over the
/// targets the PTX texts declare, among those `only` names (`TILE_ARCH`)
/// when it is given: a name matches a pack target (`sm_90`) or the target its
/// PTX declares (`sm_90a`).
fn select_ptx<'v>(
    ptx: &'v std::collections::BTreeMap<String, String>,
    cc: (u32, u32),
    only: Option<&[String]>,
) -> Result<&'v str, TargetError> {
    let all: Vec<(&str, &str)> = ptx
        .iter()
        .map(|(key, text)| (key.as_str(), declared_target(text).unwrap_or(key)))
        .collect();
    let candidates: Vec<(&str, &str)> = match only {
        None => all.clone(),
        Some(names) => all
            .iter()
            .copied()
            .filter(|(key, declared)| names.iter().any(|n| n == key || n == declared))
            .collect(),
    };
    let declared: Vec<&str> = candidates.iter().map(|c| c.1).collect();
    let chosen = choose_target(&declared, cc).map_err(|e| match (only, candidates.is_empty()) {
        (None, _) => e,
        (Some(names), true) => TargetError::Override {
            value: names.join(","),
            reason: format!(
                "the pack has no PTX for {} (it has: {}); unset {TILE_ARCH} to let the runtime \
                 choose, or rebuild the pack with that target (`{TILE_ARCH}=... bash scripts/packs`)",
                names.join(", "),
                all.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
            ),
        },
        (Some(names), false) => {
            let (major, minor) = cc;
            TargetError::Override {
                value: names.join(","),
                reason: format!(
                    "this GPU (compute capability {major}.{minor}) cannot run {}; unset {TILE_ARCH} \
                     to let the runtime choose",
                    describe_targets(&declared.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                ),
            }
        }
    })?;
    Ok(candidates
        .iter()
        .find(|c| c.1 == chosen)
        .map(|c| c.0)
        .expect("the chosen target is a candidate's"))
}

/// `BLOCK=1024, warps=4`.
pub fn describe(c: &Config) -> String {
    c.describe()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tile_ir::pack::ALLOW_FOREIGN_PACK;

    const DEVICES: [(u32, u32); 6] = [(8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)];

    /// Issue 29 item 1: the PTX each device takes from each kind of pack, one
    /// row per pack: what 8.0, 8.6, 8.9, 9.0, 10.0, 12.0 load (`-`: an error).
    /// Our packs' sm_90 PTX declares `sm_90a`; a plain `sm_90` is tested too.
    #[test]
    fn choose_target_for_each_device_and_pack() {
        let table: [(&[&str], [&str; 6]); 6] = [
            (
                &["sm_80", "sm_90a"],
                ["sm_80", "sm_80", "sm_80", "sm_90a", "sm_80", "sm_80"],
            ),
            (&["sm_90a"], ["-", "-", "-", "sm_90a", "-", "-"]),
            (&["sm_80"], ["sm_80"; 6]),
            (
                &["sm_80", "sm_90"],
                ["sm_80", "sm_80", "sm_80", "sm_90", "sm_90", "sm_90"],
            ),
            (&["sm_90"], ["-", "-", "-", "sm_90", "sm_90", "sm_90"]),
            // Exact arch-specific beats plain at 9.0; 8.6 takes its own plain PTX.
            (
                &["sm_90", "sm_90a", "sm_86", "sm_80"],
                ["sm_80", "sm_86", "sm_86", "sm_90a", "sm_90", "sm_90"],
            ),
        ];
        for (pack, want) in table {
            for (cc, want) in DEVICES.into_iter().zip(want) {
                let got = choose_target(pack, cc).unwrap_or("-");
                assert_eq!(got, want, "pack {pack:?} on compute capability {cc:?}");
            }
        }
        // Order of the pack's targets does not matter.
        assert_eq!(choose_target(&["sm_90a", "sm_80"], (9, 0)), Ok("sm_90a"));
        assert_eq!(choose_target(&["sm_90a", "sm_80"], (8, 9)), Ok("sm_80"));
        // Arch-specific never elsewhere, family-specific within its major only.
        assert!(choose_target(&["sm_100a"], (10, 3)).is_err());
        assert_eq!(choose_target(&["sm_100f"], (10, 3)), Ok("sm_100f"));
        assert!(choose_target(&["sm_100f"], (12, 0)).is_err());
        // Before the A100: nothing runs; nonsense names are skipped.
        assert!(choose_target(&["sm_80", "sm_90a"], (7, 5)).is_err());
        assert_eq!(choose_target(&["cpu", "sm_80"], (8, 6)), Ok("sm_80"));
    }

    /// A pack with nothing the device can run says what it has, what the
    /// device is, and how to build a pack that runs.
    #[test]
    fn no_runnable_target_names_targets_cc_and_hint() {
        let msg = choose_target(&["sm_90a"], (8, 6)).unwrap_err().to_string();
        for needle in [
            "sm_90a",
            "9.0 only",
            "8.6",
            "TILE_ARCH=sm_80",
            "scripts/packs",
            "tilec pack",
        ] {
            assert!(msg.contains(needle), "`{needle}` missing from: {msg}");
        }
        let msg = choose_target(&["sm_80", "sm_90a"], (7, 5))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("7.5") && msg.contains("8.0 and later"),
            "{msg}"
        );
        let msg = choose_target(&[], (9, 0)).unwrap_err().to_string();
        assert!(
            msg.contains("no PTX at all") && msg.contains("TILE_ARCH=sm_90"),
            "{msg}"
        );
    }

    /// `TILE_ARCH` takes a target or a comma-separated list; nonsense is an
    /// error that names the variable, the value and what is expected.
    #[test]
    fn tile_arch_parsing_rejects_nonsense() {
        assert_eq!(parse_arch_override(""), Ok(None));
        assert_eq!(parse_arch_override("  "), Ok(None));
        assert_eq!(parse_arch_override("sm_80"), Ok(Some(vec!["sm_80".into()])));
        assert_eq!(
            parse_arch_override("sm_90, sm_80"),
            Ok(Some(vec!["sm_90".into(), "sm_80".into()]))
        );
        assert_eq!(
            parse_arch_override("sm_90a"),
            Ok(Some(vec!["sm_90a".into()]))
        );
        for bad in [
            "80",
            "sm80",
            "sm_",
            "sm_8",
            "SM_80",
            "ampere",
            "sm_80,",
            "sm_80,,sm_90",
            "sm_8x",
            "compute_80",
            "cpu",
        ] {
            let e = parse_arch_override(bad).expect_err(bad);
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("TILE_ARCH=`{bad}`")), "{msg}");
            assert!(
                msg.contains("sm_80") || msg.contains("empty entry"),
                "{msg}"
            );
        }
    }

    fn ptx_map(entries: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        entries
            .iter()
            .map(|(key, target)| {
                let text = format!("//\n.version 8.0\n.target {target}\n.address_size 64\n");
                (key.to_string(), text)
            })
            .collect()
    }

    /// The loader maps the declared targets back to the pack's keys, and
    /// `TILE_ARCH` restricts the choice (issue 29 item 2).
    #[test]
    fn select_ptx_by_declared_target_and_override() {
        let ptx = ptx_map(&[("sm_80", "sm_80"), ("sm_90", "sm_90a")]);
        assert_eq!(select_ptx(&ptx, (9, 0), None), Ok("sm_90"));
        assert_eq!(select_ptx(&ptx, (8, 9), None), Ok("sm_80"));
        assert_eq!(select_ptx(&ptx, (10, 0), None), Ok("sm_80"));
        let only = |s: &str| parse_arch_override(s).unwrap().unwrap();
        assert_eq!(select_ptx(&ptx, (9, 0), Some(&only("sm_80"))), Ok("sm_80"));
        assert_eq!(select_ptx(&ptx, (9, 0), Some(&only("sm_90a"))), Ok("sm_90"));
        assert_eq!(
            select_ptx(&ptx, (9, 0), Some(&only("sm_90,sm_80"))),
            Ok("sm_90")
        );
        assert_eq!(
            select_ptx(&ptx, (8, 6), Some(&only("sm_90,sm_80"))),
            Ok("sm_80")
        );
        // The device cannot run the named target.
        let msg = select_ptx(&ptx, (8, 0), Some(&only("sm_90")))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("TILE_ARCH=`sm_90`") && msg.contains("sm_90a") && msg.contains("8.0"),
            "{msg}"
        );
        // The pack lacks it.
        let msg = select_ptx(&ptx, (9, 0), Some(&only("sm_86")))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("no PTX for sm_86") && msg.contains("sm_80, sm_90"),
            "{msg}"
        );
        // PTX without a `.target` line is taken at its key.
        let mut bare = std::collections::BTreeMap::new();
        bare.insert("sm_80".to_string(), ".version 7.0".to_string());
        assert_eq!(select_ptx(&bare, (8, 6), None), Ok("sm_80"));
        assert_eq!(
            declared_target(".version 8.0\n.target sm_90a, debug\n"),
            Some("sm_90a")
        );
    }

    /// Issue 22 item 10: a pack from another compiler does not load.
    #[test]
    fn a_pack_from_another_compiler_is_refused() {
        if std::env::var_os(ALLOW_FOREIGN_PACK).is_some() {
            eprintln!("SKIPPED: {ALLOW_FOREIGN_PACK} is set");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.tpack");
        let mut m = PackManifest {
            compiler_version: "0.1.0+0123456789abcdef".into(),
            kernels: vec![],
        };
        m.write(&path).unwrap();
        let msg = match Pack::load(&path) {
            Err(e @ PackError::StaleCompiler { .. }) => e.to_string(),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a pack of another compiler loaded"),
        };
        assert!(msg.contains("0123456789abcdef") && msg.contains(tile_ir::COMPILER_FINGERPRINT));
        assert!(msg.contains("scripts/packs"), "{msg}");
        m.compiler_version = tile_ir::VERSION.into();
        m.write(&path).unwrap();
        assert!(Pack::load(&path).is_ok());
    }
}
