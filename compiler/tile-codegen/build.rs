//! Let the linker find the libMLIR-C.so that
//! scripts/setup builds into .tools/lib (Debian ships none). Rpaths are set in
//! .cargo/config.toml so that every crate's binaries get them.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let tools_lib = manifest.join("../../.tools/lib");
    let tools_lib = tools_lib.canonicalize().unwrap_or(tools_lib);
    let llvm_lib = "/usr/lib/llvm-22/lib";
    println!("cargo:rustc-link-search=native={}", tools_lib.display());
    println!("cargo:rustc-link-search=native={llvm_lib}");
}
