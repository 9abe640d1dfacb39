//! ONNX Runtime for the commands that run sessions (`demo`, `bench`, `train`): where the C library
//! and the plugin are, and one way to open a session with the plugin registered.

use anyhow::{bail, Result};
use ort::session::Session;
use std::path::{Path, PathBuf};

/// The library given by `--ort`, else `$ORT_DYLIB_PATH`, else the one `tools/setup.sh` fetched; loaded
/// (with the plugin checked to exist) into an environment named `name`.
pub fn ort_env(
    ort: Option<PathBuf>,
    plugin: &Path,
    name: &str,
) -> Result<(ort::environment::Environment, PathBuf)> {
    let ort_path = ort
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".ort/1.32.0/libonnxruntime.so"));
    if !ort_path.exists() {
        bail!(
            "ONNX Runtime library {} not found (run tools/setup.sh, or pass --ort)",
            ort_path.display()
        );
    }
    check_plugin(plugin)?;
    let env = ort::init_from(&ort_path)?.with_name(name).build()?;
    // ONNX Runtime's logger would print each failed run's error a second time, over several
    // coloured lines; the command reports it itself, on its one error line.
    env.set_log_level(ort::logging::LogLevel::Fatal);
    Ok((env, ort_path))
}

/// The plugin exists and is a DiTAC plugin: a shared library exporting `RegisterCustomOps`. Checked
/// here with `libloading` so that a wrong `--plugin` (a missing file, another library, a text file) is
/// one clear line rather than ONNX Runtime's generic registration failure at the first session.
pub fn check_plugin(plugin: &Path) -> Result<()> {
    if !plugin.is_file() {
        bail!(
            "plugin {} not found (run cargo build --release, or pass --plugin)",
            plugin.display()
        );
    }
    // SAFETY: loading runs the library's initialisers; ours has none beyond Rust's, and any other
    // library named here is one the user asked ONNX Runtime to load anyway.
    let lib = unsafe { libloading::Library::new(plugin) }
        .map_err(|e| anyhow::anyhow!("plugin {} cannot be loaded: {e}", plugin.display()))?;
    // SAFETY: only the symbol's presence is checked; it is never called through this handle.
    let found = unsafe { lib.get::<unsafe extern "C" fn()>(b"RegisterCustomOps\0") }.is_ok();
    if !found {
        bail!(
            "{} is not a DiTAC plugin: it exports no RegisterCustomOps",
            plugin.display()
        );
    }
    Ok(())
}

/// A session on `bytes` with `threads` intra-op threads and the plugin registered.
pub fn open_session(
    env: &ort::environment::Environment,
    plugin: &Path,
    threads: usize,
    bytes: &[u8],
) -> Result<Session> {
    let b = Session::builder(env)?
        .with_intra_threads(threads)
        .map_err(ort::Error::<()>::from)?;
    let mut b = b
        .with_operator_library(plugin)
        .map_err(ort::Error::<()>::from)?;
    Ok(b.commit_from_memory(bytes)?)
}
