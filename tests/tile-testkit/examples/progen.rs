//! Write generated kernels (tile_testkit::progen) into a directory, one
//! `.tile` file each, keeping only those the checker accepts in every
//! configuration (a pack compiles only when all of its kernels do):
//!
//!     cargo run -p tile-testkit --example progen -- DIR SEED COUNT [FIRST]
//!
//! writes `fz_SEED_I.tile` for I in FIRST..FIRST+COUNT (scripts/fuzz-pack).
use tile_front::frontend::{parse_program, SourceFile};
use tile_testkit::progen;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: progen DIR SEED COUNT [FIRST]");
        std::process::exit(2);
    }
    let dir = std::path::PathBuf::from(&args[0]);
    let seed: u64 = args[1].parse().expect("SEED: an integer");
    let count: u64 = args[2].parse().expect("COUNT: an integer");
    let first: u64 = args
        .get(3)
        .map_or(0, |a| a.parse().expect("FIRST: an integer"));
    std::fs::create_dir_all(&dir).expect("create DIR");
    let (mut kept, mut rejected) = (0, 0);
    for i in first..first + count {
        let g = progen::generate(seed, i);
        let src = SourceFile::new(format!("{}.tile", g.name), g.source.as_str());
        let diags = match parse_program(&src) {
            Ok(p) => p.check_all(),
            Err(d) => d,
        };
        if diags.is_empty() {
            std::fs::write(dir.join(format!("{}.tile", g.name)), &g.source).expect("write");
            kept += 1;
        } else {
            if rejected < 3 {
                eprintln!("rejected:\n{}{}", g.source, diags.render(&src));
            }
            rejected += 1;
        }
    }
    eprintln!(
        "progen: seed {seed}: wrote {kept} kernels to {}, skipped {rejected} the checker rejected",
        dir.display()
    );
}
