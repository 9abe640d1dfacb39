//! ONNX Runtime for the commands that run sessions (`demo`, `bench`, `train`, `train-artifacts`):
//! the C library and the plugin found by the one rule of [`ditac_tools::runtime`], and one way to
//! open a session with the plugin registered.

use anyhow::{bail, Result};
use ditac_tools::runtime::{PluginFlag, RuntimeFlags, Search};
use ort::session::Session;
use std::path::{Path, PathBuf};

/// The plugin named by `flag` or found by the lookup rule, checked to be a DiTAC plugin.
pub fn plugin(flag: &PluginFlag) -> Result<PathBuf> {
    let p = Search::from_process().plugin(flag.plugin.as_deref())?;
    check_plugin(&p)?;
    Ok(p)
}

/// ONNX Runtime's library and the plugin, found by the lookup rule; the library loaded into an
/// environment named `name`. Returns the environment, the library's path and the plugin's.
pub fn ort_env(
    flags: &RuntimeFlags,
    name: &str,
) -> Result<(ort::environment::Environment, PathBuf, PathBuf)> {
    let search = Search::from_process();
    let ort_path = search.ort(flags.ort.as_deref())?;
    let plugin = search.plugin(flags.plugin.plugin.as_deref())?;
    check_plugin(&plugin)?;
    let env = ort::init_from(&ort_path)?.with_name(name).build()?;
    // ONNX Runtime's logger would print each failed run's error a second time, over several
    // coloured lines; the command reports it itself, on its one error line.
    env.set_log_level(ort::logging::LogLevel::Fatal);
    Ok((env, ort_path, plugin))
}

/// The plugin exists and is a DiTAC plugin: a shared library exporting `RegisterCustomOps`. Checked
/// here with `libloading` so that a wrong `--plugin` (a missing file, another library, a text file) is
/// one clear line rather than ONNX Runtime's generic registration failure at the first session.
fn check_plugin(plugin: &Path) -> Result<()> {
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
