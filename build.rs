//! Build script: for the plugin cdylib, a linker version script that exports only
//! `RegisterCustomOps` and keeps every other symbol local (ELF targets).

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
    fs::write(
        &script,
        "{\n  global:\n    RegisterCustomOps;\n  local:\n    *;\n};\n",
    )
    .expect("write the linker version script");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        script.display()
    );
}
