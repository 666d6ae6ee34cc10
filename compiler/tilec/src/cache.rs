//! The compile cache: content-addressed, on disk, shared by every `tilec`
//! process of a user (`tilec pack`, `tilec build --emit ptx`).
//!
//! **Key**: SHA-256 over the compiler fingerprint ([`tile_ir::VERSION`]), the
//! kernel's specialised TIR as printed ([`tile_ir::print_kernel`]), the target
//! architecture and the code-generation options (their `Debug` form, so an
//! option added to `tile_codegen::Options` is covered without touching this
//! file). **Value**: what compiling one (kernel, config, arch) gives a pack —
//! the PTX, the dynamic shared memory in bytes and the TMA operands.
//!
//! **Invariant**: a hit is byte-identical to a fresh compile of the same
//! inputs. It holds because the key covers every input of the code generator
//! (the printed TIR round-trips through `tile_ir::parse_kernel`; spans only
//! name errors, and failed compiles are never stored) and the code generator
//! is deterministic; a new compiler has a new fingerprint, so its entries
//! never meet an older compiler's.
//!
//! **Location**: `$TILE_CACHE_DIR`, else `$XDG_CACHE_HOME/tile`, else
//! `~/.cache/tile`; `TILE_CACHE=0` disables the cache. Entries live in
//! `<dir>/<2 hex>/<64 hex key>`; other files in the directory (the
//! autotuner's `autotune-v1.json`) are never counted, evicted or cleared.
//!
//! **Entry file** (integers little-endian):
//! ```text
//! 0   8   magic "TILECCHE"
//! 8   4   entry format version
//! 12  32  the key (raw SHA-256)
//! 44  8   length M of the metadata (JSON: shared_bytes, tma)
//! 52  8   length P of the PTX
//! 60  M   metadata
//! 60+M P  PTX (UTF-8)
//! …   32  SHA-256 of everything before it
//! ```
//! Writes are atomic (a uniquely named temporary file in the entry's
//! directory, then a rename: [`tile_ir::pack::write_atomic`]), so concurrent
//! processes writing the same key each install a whole entry and a reader sees
//! one of them. Reads validate magic, version, key, lengths and hash; an entry
//! that fails is ignored (a line on stderr with `TILE_CACHE_DEBUG=1`),
//! recompiled and overwritten — never trusted.
//!
//! **Size bound**: `TILE_CACHE_MAX_BYTES` (default 1 GiB). After a batch of
//! writes ([`Cache::evict`], called by `compile_dir` and `tilec build`) the
//! least recently used entries (by mtime; a hit touches its entry) are deleted
//! until the total fits.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tile_ir::launch::TmaOperand;

const MAGIC: &[u8; 8] = b"TILECCHE";
/// Bump when the entry layout or the meaning of its fields changes.
pub const ENTRY_VERSION: u32 = 1;
const HEADER: usize = 60;
/// Default size bound: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Temporary files older than this are leftovers of a killed writer.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// What compiling one (kernel, config, arch) produces for a pack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub ptx: String,
    pub shared_bytes: u32,
    pub tma: Vec<TmaOperand>,
    /// `tile_codegen::Artifacts::waits_for_prior_grid`.
    pub waits_for_prior_grid: bool,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    shared_bytes: u32,
    tma: Vec<TmaOperand>,
    #[serde(default)]
    waits_for_prior_grid: bool,
}

/// A cache key: SHA-256 of the inputs of one compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

impl Key {
    /// The key of compiling the printed TIR `tir` for `arch` with `options`
    /// by the compiler `fingerprint`. Each part is length-prefixed, so no two
    /// different inputs hash the same bytes.
    pub fn new(fingerprint: &str, tir: &str, arch: &str, options: &str) -> Key {
        let mut h = Sha256::new();
        h.update(b"tile-compile-cache\0");
        h.update(ENTRY_VERSION.to_le_bytes());
        for part in [fingerprint, tir, arch, options] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        Key(h.finalize().into())
    }

    /// The key of `tile_codegen::compile(kernel, opts)` by this compiler.
    pub fn of(kernel: &tile_ir::Kernel, opts: &tile_codegen::Options) -> Key {
        Key::new(
            tile_ir::VERSION,
            &tile_ir::print_kernel(kernel),
            opts.arch.name(),
            &format!("{opts:?}"),
        )
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Entries and bytes in the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub entries: u64,
    pub bytes: u64,
}

/// An on-disk compile cache rooted at a directory.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    written: AtomicU64,
}

fn debug_enabled() -> bool {
    std::env::var_os("TILE_CACHE_DEBUG").is_some_and(|v| v == "1")
}

fn debug(msg: impl FnOnce() -> String) {
    if debug_enabled() {
        eprintln!("tile cache: {}", msg());
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Cache {
    /// A cache in `dir` bounded to `max_bytes` (nothing is created until a write).
    pub fn at(dir: impl Into<PathBuf>, max_bytes: u64) -> Cache {
        Cache {
            dir: dir.into(),
            max_bytes,
            written: AtomicU64::new(0),
        }
    }

    /// The cache directory the environment names, whether or not the cache is
    /// enabled: `$TILE_CACHE_DIR`, else `$XDG_CACHE_HOME/tile`, else
    /// `~/.cache/tile`; `None` when none of them is set.
    pub fn default_dir() -> Option<PathBuf> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(d) = var("TILE_CACHE_DIR") {
            return Some(PathBuf::from(d));
        }
        if let Some(d) = var("XDG_CACHE_HOME") {
            return Some(PathBuf::from(d).join("tile"));
        }
        var("HOME").map(|h| PathBuf::from(h).join(".cache").join("tile"))
    }

    /// The size bound the environment sets (`TILE_CACHE_MAX_BYTES`, default 1 GiB).
    pub fn default_max_bytes() -> u64 {
        match std::env::var("TILE_CACHE_MAX_BYTES") {
            Ok(v) => v.trim().parse().unwrap_or_else(|_| {
                eprintln!(
                    "warning: TILE_CACHE_MAX_BYTES=`{v}` is not a number of bytes; using {DEFAULT_MAX_BYTES}"
                );
                DEFAULT_MAX_BYTES
            }),
            Err(_) => DEFAULT_MAX_BYTES,
        }
    }

    /// Whether `TILE_CACHE=0` turns the cache off.
    pub fn disabled_by_env() -> bool {
        std::env::var_os("TILE_CACHE").is_some_and(|v| v == "0")
    }

    /// The cache the environment configures; `None` when `TILE_CACHE=0` or no
    /// directory can be named.
    pub fn from_env() -> Option<Cache> {
        if Self::disabled_by_env() {
            return None;
        }
        Some(Cache::at(Self::default_dir()?, Self::default_max_bytes()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The file that holds `key`'s entry.
    pub fn path(&self, key: &Key) -> PathBuf {
        let hex = key.hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// The entry stored under `key`, validated; `None` on a miss or when the
    /// stored file is not a whole, intact entry for this key (then it is
    /// ignored and the next [`Cache::put`] replaces it). A hit marks the entry
    /// as recently used.
    pub fn get(&self, key: &Key) -> Option<Entry> {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    debug(|| format!("cannot read {}: {e}", path.display()));
                }
                return None;
            }
        };
        match decode(&bytes, key) {
            Ok(entry) => {
                // LRU by mtime; failing to touch (read-only cache) is harmless.
                if let Ok(f) = std::fs::File::options().write(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Some(entry)
            }
            Err(why) => {
                debug(|| format!("ignoring entry {}: {why}", path.display()));
                None
            }
        }
    }

    /// Store `entry` under `key` atomically (a reader sees the old entry or
    /// the new one, never a mix).
    pub fn put(&self, key: &Key, entry: &Entry) -> std::io::Result<()> {
        let bytes = encode(key, entry);
        tile_ir::pack::write_atomic(&self.path(key), &bytes)?;
        self.written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes this handle has written.
    pub fn written_bytes(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Every entry file: (path, size, mtime). Temporary files of writers are
    /// skipped (and deleted when older than an hour).
    fn entries(&self) -> std::io::Result<Vec<(PathBuf, u64, SystemTime)>> {
        let mut out = Vec::new();
        let top = match std::fs::read_dir(&self.dir) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for sub in top.flatten() {
            let name = sub.file_name();
            if !is_hex(&name.to_string_lossy(), 2) || !sub.path().is_dir() {
                continue;
            }
            let Ok(files) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let Ok(md) = f.metadata() else { continue };
                let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                if is_hex(&name, 64) && md.is_file() {
                    out.push((f.path(), md.len(), mtime));
                } else if name.starts_with(".tmp")
                    && mtime.elapsed().is_ok_and(|age| age > STALE_TMP)
                {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
        Ok(out)
    }

    /// How many entries and bytes the cache holds.
    pub fn usage(&self) -> std::io::Result<Usage> {
        let e = self.entries()?;
        Ok(Usage {
            entries: e.len() as u64,
            bytes: e.iter().map(|(_, n, _)| n).sum(),
        })
    }

    /// Delete least recently used entries until at most `max_bytes` remain.
    /// Returns the number of entries deleted. Safe beside other processes
    /// (an entry another one deleted first is skipped).
    pub fn evict(&self) -> std::io::Result<u64> {
        let mut entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|(_, n, _)| n).sum();
        if total <= self.max_bytes {
            return Ok(0);
        }
        // Oldest first; ties by path, so the order is deterministic.
        entries.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.0.cmp(&b.0)));
        let mut removed = 0;
        for (path, size, _) in entries {
            if total <= self.max_bytes {
                break;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            total -= size;
        }
        debug(|| format!("evicted {removed} entries, {total} bytes remain"));
        Ok(removed)
    }

    /// [`Cache::evict`] if this handle wrote anything; errors are reported on
    /// stderr only with `TILE_CACHE_DEBUG=1` (the cache is an optimisation).
    pub fn evict_after_writes(&self) {
        if self.written_bytes() > 0 {
            if let Err(e) = self.evict() {
                debug(|| format!("eviction failed: {e}"));
            }
        }
    }

    /// Delete every entry. Returns what was deleted.
    pub fn clear(&self) -> std::io::Result<Usage> {
        let mut gone = Usage::default();
        for (path, size, _) in self.entries()? {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    gone.entries += 1;
                    gone.bytes += size;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        // Empty shard directories go too (one still in use stays).
        if let Ok(top) = std::fs::read_dir(&self.dir) {
            for sub in top.flatten() {
                if is_hex(&sub.file_name().to_string_lossy(), 2) {
                    let _ = std::fs::remove_dir(sub.path());
                }
            }
        }
        Ok(gone)
    }
}

fn encode(key: &Key, entry: &Entry) -> Vec<u8> {
    let meta = serde_json::to_vec(&Meta {
        shared_bytes: entry.shared_bytes,
        tma: entry.tma.clone(),
        waits_for_prior_grid: entry.waits_for_prior_grid,
    })
    .expect("cache metadata serialises");
    let mut out = Vec::with_capacity(HEADER + meta.len() + entry.ptx.len() + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&ENTRY_VERSION.to_le_bytes());
    out.extend_from_slice(&key.0);
    out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    out.extend_from_slice(&(entry.ptx.len() as u64).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(entry.ptx.as_bytes());
    let hash = Sha256::digest(&out);
    out.extend_from_slice(&hash);
    out
}

fn decode(bytes: &[u8], key: &Key) -> Result<Entry, String> {
    if bytes.len() < HEADER + 32 {
        return Err(format!("truncated ({} bytes)", bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return Err("bad magic".into());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version != ENTRY_VERSION {
        return Err(format!("entry version {version}, expected {ENTRY_VERSION}"));
    }
    if bytes[12..44] != key.0 {
        return Err("stored under another key".into());
    }
    let m = u64::from_le_bytes(bytes[44..52].try_into().unwrap());
    let p = u64::from_le_bytes(bytes[52..60].try_into().unwrap());
    let expected = (HEADER as u64)
        .checked_add(m)
        .and_then(|n| n.checked_add(p))
        .and_then(|n| n.checked_add(32));
    if expected != Some(bytes.len() as u64) {
        return Err(format!(
            "length {} does not match the header's {expected:?}",
            bytes.len()
        ));
    }
    let body = bytes.len() - 32;
    if Sha256::digest(&bytes[..body]).as_slice() != &bytes[body..] {
        return Err("content hash mismatch".into());
    }
    let (m, p) = (m as usize, p as usize);
    let meta: Meta = serde_json::from_slice(&bytes[HEADER..HEADER + m])
        .map_err(|e| format!("bad metadata: {e}"))?;
    let ptx = std::str::from_utf8(&bytes[HEADER + m..HEADER + m + p])
        .map_err(|e| format!("PTX is not UTF-8: {e}"))?
        .to_string();
    Ok(Entry {
        ptx,
        shared_bytes: meta.shared_bytes,
        tma: meta.tma,
        waits_for_prior_grid: meta.waits_for_prior_grid,
    })
}

/// `tile_codegen::compile(kernel, opts)` reduced to what a pack keeps, through
/// `cache` when there is one: a hit returns the stored entry, a miss compiles
/// and stores it (a failed store only loses the caching). The flag says
/// whether it was a hit. Errors are never cached.
pub fn compile(
    cache: Option<&Cache>,
    kernel: &tile_ir::Kernel,
    opts: &tile_codegen::Options,
) -> Result<(Entry, bool), tile_codegen::CodegenError> {
    let key = cache.map(|_| Key::of(kernel, opts));
    if let (Some(c), Some(k)) = (cache, &key) {
        if let Some(e) = c.get(k) {
            return Ok((e, true));
        }
    }
    let art = tile_codegen::compile(kernel, opts)?;
    let entry = Entry {
        ptx: art.ptx,
        shared_bytes: art.shared_bytes,
        tma: art.tma,
        waits_for_prior_grid: art.waits_for_prior_grid,
    };
    if let (Some(c), Some(k)) = (cache, &key) {
        if let Err(e) = c.put(k, &entry) {
            debug(|| format!("cannot write {}: {e}", c.path(k).display()));
        }
    }
    Ok((entry, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tile_ir::launch::HostScalar;

    fn entry(ptx: &str) -> Entry {
        Entry {
            ptx: ptx.into(),
            shared_bytes: 49152,
            waits_for_prior_grid: true,
            tma: vec![TmaOperand {
                base: 0,
                elem_bytes: 2,
                rows: HostScalar::Param(3),
                cols: HostScalar::Const(64),
                row_stride: HostScalar::Param(4),
                box_rows: 128,
                box_cols: 64,
                swizzle_bytes: 128,
            }],
        }
    }

    fn key(n: u32) -> Key {
        Key::new(
            "0.1.0+0123456789abcdef",
            &format!("kernel k{n}() {{}}"),
            "sm_90",
            "warps 4",
        )
    }

    #[test]
    fn key_is_stable_and_covers_every_input() {
        let base = (
            "0.1.0+0123456789abcdef",
            "kernel k() {}\n",
            "sm_90",
            "Options { warps: 4 }",
        );
        let k = |p: (&str, &str, &str, &str)| Key::new(p.0, p.1, p.2, p.3);
        assert_eq!(k(base), k(base), "same inputs, same key");
        assert_eq!(k(base).hex(), k(base).hex());
        assert_eq!(k(base).hex().len(), 64);
        let others = [
            ("0.1.0+fedcba9876543210", base.1, base.2, base.3),
            (base.0, "kernel k() {}\n\n", base.2, base.3),
            (base.0, base.1, "sm_80", base.3),
            (base.0, base.1, base.2, "Options { warps: 8 }"),
            // Moving bytes between parts is another key (length prefixes).
            ("0.1.0+0123456789abcdefk", "ernel k() {}\n", base.2, base.3),
        ];
        for o in others {
            assert_ne!(k(o), k(base), "{o:?}");
        }
    }

    #[test]
    fn key_of_a_kernel_covers_fingerprint_options_and_arch() {
        let kernel = tile_ir::parse_kernel("kernel k() {\n}\n").unwrap();
        let o = tile_codegen::Options::default();
        assert_eq!(Key::of(&kernel, &o), Key::of(&kernel, &o));
        assert_eq!(
            Key::of(&kernel, &o),
            Key::new(
                tile_ir::VERSION,
                &tile_ir::print_kernel(&kernel),
                "sm_90",
                &format!("{o:?}")
            )
        );
        let mut w = o.clone();
        w.warps = 8;
        assert_ne!(Key::of(&kernel, &w), Key::of(&kernel, &o));
        let mut c = o.clone();
        c.ctas = Some(3);
        assert_ne!(Key::of(&kernel, &c), Key::of(&kernel, &o));
        let mut a = o.clone();
        a.arch = tile_codegen::Arch::Sm80;
        assert_ne!(Key::of(&kernel, &a), Key::of(&kernel, &o));
        let other = tile_ir::parse_kernel("kernel j() {\n}\n").unwrap();
        assert_ne!(Key::of(&other, &o), Key::of(&kernel, &o));
    }

    #[test]
    fn put_then_get_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::at(dir.path(), DEFAULT_MAX_BYTES);
        assert_eq!(c.get(&key(1)), None);
        c.put(&key(1), &entry(".version 8.0\n// ünïcode")).unwrap();
        assert_eq!(c.get(&key(1)), Some(entry(".version 8.0\n// ünïcode")));
        assert_eq!(c.get(&key(2)), None);
        assert_eq!(c.usage().unwrap().entries, 1);
    }

    /// Every way an entry can be damaged is a miss, and the next put repairs it.
    #[test]
    fn corrupted_entry_is_ignored_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::at(dir.path(), DEFAULT_MAX_BYTES);
        let k = key(1);
        let e = entry(&"mov.u32 %r1, %r2;\n".repeat(100));
        c.put(&k, &e).unwrap();
        let good = std::fs::read(c.path(&k)).unwrap();
        let mut damaged: Vec<Vec<u8>> = vec![
            vec![],
            good[..good.len() / 2].to_vec(),
            good[..good.len() - 1].to_vec(),
            [good.clone(), vec![0]].concat(),
        ];
        for i in [0, 9, 20, 50, 70, good.len() - 100, good.len() - 1] {
            let mut b = good.clone();
            b[i] ^= 0x20;
            damaged.push(b);
        }
        // Another key's intact entry copied over this one.
        c.put(&key(2), &e).unwrap();
        damaged.push(std::fs::read(c.path(&key(2))).unwrap());
        for (i, bytes) in damaged.iter().enumerate() {
            std::fs::write(c.path(&k), bytes).unwrap();
            assert_eq!(c.get(&k), None, "damaged entry {i} was trusted");
        }
        c.put(&k, &e).unwrap();
        assert_eq!(c.get(&k), Some(e));
        assert_eq!(std::fs::read(c.path(&k)).unwrap(), good);
    }

    /// A damaged entry met by `compile` is recompiled and replaced.
    #[test]
    fn compile_recompiles_over_a_damaged_entry() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::at(dir.path(), DEFAULT_MAX_BYTES);
        let kernel = tile_ir::parse_kernel("kernel k() {\n}\n").unwrap();
        let opts = tile_codegen::Options::default();
        let (fresh, hit) = compile(Some(&c), &kernel, &opts).unwrap();
        assert!(!hit);
        let (again, hit) = compile(Some(&c), &kernel, &opts).unwrap();
        assert!(hit);
        assert_eq!(again, fresh);
        let path = c.path(&Key::of(&kernel, &opts));
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, &good[..good.len() - 7]).unwrap();
        let (third, hit) = compile(Some(&c), &kernel, &opts).unwrap();
        assert!(!hit, "a truncated entry must not be a hit");
        assert_eq!(third, fresh);
        assert_eq!(std::fs::read(&path).unwrap(), good, "rewritten");
        let (uncached, _) = compile(None, &kernel, &opts).unwrap();
        assert_eq!(uncached, fresh, "a hit is what a fresh compile gives");
    }

    #[test]
    fn eviction_keeps_the_bound_and_drops_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let one = encode(&key(0), &entry(&"x".repeat(1000))).len() as u64;
        let c = Cache::at(dir.path(), 5 * one + one / 2);
        let t0 = SystemTime::now() - Duration::from_secs(1000);
        for n in 0..10 {
            c.put(&key(n), &entry(&"x".repeat(1000))).unwrap();
            // Distinct, increasing mtimes (the file system's clock may be coarse).
            let f = std::fs::File::options()
                .write(true)
                .open(c.path(&key(n)))
                .unwrap();
            f.set_modified(t0 + Duration::from_secs(10 * n as u64))
                .unwrap();
        }
        // A hit on the oldest makes it the most recently used.
        assert!(c.get(&key(0)).is_some());
        assert_eq!(c.usage().unwrap().entries, 10);
        assert_eq!(c.evict().unwrap(), 5);
        let u = c.usage().unwrap();
        assert!(u.bytes <= c.max_bytes(), "{u:?}");
        assert_eq!(u.entries, 5);
        let kept: Vec<u32> = (0..10).filter(|&n| c.get(&key(n)).is_some()).collect();
        assert_eq!(kept, [0, 6, 7, 8, 9]);
        assert_eq!(c.evict().unwrap(), 0, "within the bound: nothing to do");
        // Other files in the directory are neither counted nor evicted.
        std::fs::write(dir.path().join("autotune-v1.json"), "{}").unwrap();
        let zero = Cache::at(dir.path(), 0);
        assert_eq!(zero.evict().unwrap(), 5);
        assert_eq!(zero.usage().unwrap(), Usage::default());
        assert!(dir.path().join("autotune-v1.json").exists());
    }

    /// Two threads writing the same key over and over, a third reading it:
    /// the file on disk is always a whole entry of one of them.
    #[test]
    fn concurrent_writers_never_tear_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::at(dir.path(), DEFAULT_MAX_BYTES);
        let k = key(7);
        let a = entry(&"a".repeat(200_000));
        let b = entry(&"b".repeat(300_000));
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut seen = 0;
                loop {
                    let stop = done.load(Ordering::Acquire);
                    match std::fs::read(c.path(&k)) {
                        Ok(bytes) => {
                            let got = decode(&bytes, &k).expect("a torn entry on disk");
                            assert!(got == a || got == b);
                            seen += 1;
                        }
                        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
                    }
                    if stop {
                        return seen;
                    }
                }
            });
            let writers: Vec<_> = [&a, &b]
                .into_iter()
                .map(|e| {
                    let c = &c;
                    s.spawn(move || {
                        for _ in 0..40 {
                            c.put(&k, e).unwrap();
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            done.store(true, Ordering::Release);
            assert!(reader.join().unwrap() > 0);
        });
        let got = c.get(&k).unwrap();
        assert!(got == a || got == b);
        assert_eq!(
            c.usage().unwrap().entries,
            1,
            "no temporary file left behind"
        );
    }

    #[test]
    fn clear_empties_the_cache_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::at(dir.path(), DEFAULT_MAX_BYTES);
        for n in 0..3 {
            c.put(&key(n), &entry("p")).unwrap();
        }
        std::fs::write(dir.path().join("autotune-v1.json"), "{}").unwrap();
        let gone = c.clear().unwrap();
        assert_eq!(gone.entries, 3);
        assert_eq!(c.usage().unwrap(), Usage::default());
        assert!(dir.path().join("autotune-v1.json").exists());
        assert_eq!(c.get(&key(0)), None);
    }
}
