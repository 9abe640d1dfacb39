//! Build script: for the plugin cdylib (ELF targets), a linker version script that exports only
//! `RegisterCustomOps` (ONNX Runtime's entry point) and the C API of `src/capi.rs` (`ditac_*`, for
//! `ditac_onnx.torch`) and keeps every other symbol local, and `-z nodelete`.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let elf = matches!(
        os.as_str(),
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly"
    );
    if !elf {
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let script = out.join("ditac_plugin.ver");
    let exported = [
        "RegisterCustomOps",
        "ditac_capi_version",
        "ditac_basis",
        "ditac_precision_matrix",
        "ditac_init_covariance",
        "ditac_tables",
    ];
    let globals: String = exported.iter().map(|s| format!("    {s};\n")).collect();
    fs::write(
        &script,
        format!("{{\n  global:\n{globals}  local:\n    *;\n}};\n"),
    )
    .expect("write the linker version script");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        script.display()
    );
    // Once loaded, the plugin stays for the life of the process: its process-wide statics (the op
    // definitions, the domains ORT holds, the basis cache) must outlive every session, and a host
    // that unloads the library when its last SessionOptions goes (Python's onnxruntime does) would
    // otherwise orphan them on every load (5 kB definitely lost per cycle under valgrind). With
    // nodelete, `dlclose` keeps the mapping and a later `dlopen` finds the same statics.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
