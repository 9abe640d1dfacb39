//! Where the two runtime pieces are — the plugin (`libditac.so`) and ONNX Runtime's C library — by
//! one rule that every command uses, so that `ditac` works where it is installed and not only in
//! its checkout:
//!
//! - the plugin: `--plugin`, else `$DITAC_PLUGIN`, else the installed `ditac_onnx` package's library
//!   (in the Python environment the command runs in), else `libditac.so` beside the executable, else
//!   the checkout's `target/release/`;
//! - ONNX Runtime: `--ort`, else `$ORT_DYLIB_PATH`, else the `onnxruntime` Python package of that
//!   environment (`onnxruntime/capi/libonnxruntime.so*`), else the checkout's `.ort/<ORT_VERSION>/`.
//!
//! A flag or variable that is given is a choice: it is used, or it is the error (a missing file is not
//! skipped over). The other places are searched in order and the first existing file wins. When none
//! exists, one line lists every place tried.
//!
//! "The Python environment the command runs in" is the prefix two levels above the executable
//! (`<venv>/bin/ditac`, as pip installs the script), then an activated `$VIRTUAL_ENV`; packages are
//! looked for in its `lib*/python3*/{site,dist}-packages`.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The ONNX Runtime release the project builds and tests against (`tools/setup.sh` fetches it into
/// `.ort/<ORT_VERSION>/`; the Python tests read this line).
pub const ORT_VERSION: &str = "1.32.0";
/// The plugin's file name.
pub const PLUGIN_FILE: &str = "libditac.so";
/// ONNX Runtime's C library's file name (the Python package's carries a version suffix).
pub const ORT_FILE: &str = "libonnxruntime.so";

/// `--plugin`, for the commands that load or copy the plugin.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PluginFlag {
    /// The plugin library (default: $DITAC_PLUGIN, else the installed ditac-onnx package's, else
    /// libditac.so beside this program, else the checkout's target/release/).
    #[arg(long, value_name = "FILE")]
    pub plugin: Option<PathBuf>,
}

/// `--plugin` and `--ort`, for the commands that run ONNX Runtime sessions.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RuntimeFlags {
    #[command(flatten)]
    pub plugin: PluginFlag,
    /// ONNX Runtime's C library (default: $ORT_DYLIB_PATH, else the onnxruntime Python package of
    /// this program's environment, else the checkout's .ort/).
    #[arg(long, value_name = "FILE")]
    pub ort: Option<PathBuf>,
}

/// What the lookup sees of the process: its environment variables, the executable's path and the
/// checkouts to fall back to. Built by [`Search::from_process`]; tests build their own.
#[derive(Clone, Debug, Default)]
pub struct Search {
    /// `$DITAC_PLUGIN`.
    pub plugin_var: Option<OsString>,
    /// `$ORT_DYLIB_PATH`.
    pub ort_var: Option<OsString>,
    /// The running executable.
    pub exe: Option<PathBuf>,
    /// `$VIRTUAL_ENV`.
    pub virtual_env: Option<PathBuf>,
    /// Source checkouts, nearest first: the one the executable sits in (`<checkout>/target/...`),
    /// then the one it was compiled from.
    pub checkouts: Vec<PathBuf>,
}

impl Search {
    /// The running process's view.
    pub fn from_process() -> Self {
        let exe = std::env::current_exe().ok();
        let mut checkouts: Vec<PathBuf> = Vec::new();
        if let Some(e) = &exe {
            if let Some(c) = e.ancestors().skip(1).find(|p| is_checkout(p)) {
                checkouts.push(c.to_path_buf());
            }
        }
        let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        if is_checkout(&built) {
            if let Ok(c) = built.canonicalize() {
                if !checkouts.contains(&c) {
                    checkouts.push(c);
                }
            }
        }
        Search {
            plugin_var: non_empty(std::env::var_os("DITAC_PLUGIN")),
            ort_var: non_empty(std::env::var_os("ORT_DYLIB_PATH")),
            exe,
            virtual_env: non_empty(std::env::var_os("VIRTUAL_ENV")).map(PathBuf::from),
            checkouts,
        }
    }

    /// The Python environments the command runs in: the executable's prefix, then `$VIRTUAL_ENV`.
    fn prefixes(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Some(p) = self.exe.as_deref().and_then(|e| e.parent()?.parent()) {
            out.push(p.to_path_buf());
        }
        if let Some(v) = &self.virtual_env {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        out
    }

    /// The plugin, by the rule in the module's documentation.
    pub fn plugin(&self, flag: Option<&Path>) -> anyhow::Result<PathBuf> {
        let mut places = Vec::new();
        for prefix in self.prefixes() {
            places.push(Place::Glob {
                prefix,
                package: "ditac_onnx",
                file: PLUGIN_FILE,
                prefix_match: false,
            });
        }
        if let Some(dir) = self.exe.as_deref().and_then(Path::parent) {
            places.push(Place::File(dir.join(PLUGIN_FILE), "beside this program"));
        }
        for c in &self.checkouts {
            places.push(Place::File(
                c.join("target/release").join(PLUGIN_FILE),
                "the checkout's build",
            ));
        }
        resolve(
            "the plugin (libditac.so)",
            ("--plugin", flag),
            ("$DITAC_PLUGIN", self.plugin_var.as_deref().map(Path::new)),
            &places,
            "build it (cargo build --release -p ditac --lib), pip install ditac-onnx, or pass --plugin",
        )
    }

    /// ONNX Runtime's C library, by the rule in the module's documentation.
    pub fn ort(&self, flag: Option<&Path>) -> anyhow::Result<PathBuf> {
        let mut places = Vec::new();
        for prefix in self.prefixes() {
            places.push(Place::Glob {
                prefix,
                package: "onnxruntime/capi",
                file: ORT_FILE,
                prefix_match: true,
            });
        }
        for c in &self.checkouts {
            places.push(Place::File(
                c.join(".ort").join(ORT_VERSION).join(ORT_FILE),
                "the checkout's tools/setup.sh",
            ));
        }
        resolve(
            "ONNX Runtime's library (libonnxruntime.so)",
            ("--ort", flag),
            ("$ORT_DYLIB_PATH", self.ort_var.as_deref().map(Path::new)),
            &places,
            "pip install onnxruntime (or onnxruntime-gpu) in this environment, set ORT_DYLIB_PATH, or pass --ort",
        )
    }
}

/// A folder that looks like this project's checkout.
fn is_checkout(p: &Path) -> bool {
    p.join("Cargo.toml").is_file() && p.join("tools/python").is_dir() && p.join("ops").is_dir()
}

fn non_empty(v: Option<OsString>) -> Option<OsString> {
    v.filter(|s| !s.is_empty())
}

/// One place searched after the explicit choices.
enum Place {
    /// This file.
    File(PathBuf, &'static str),
    /// `<prefix>/lib*/python3*/{site,dist}-packages/<package>/<file>` (`prefix_match`: a file whose
    /// name starts with `file`, e.g. `libonnxruntime.so.1.32.0`).
    Glob {
        prefix: PathBuf,
        package: &'static str,
        file: &'static str,
        prefix_match: bool,
    },
}

impl Place {
    fn find(&self) -> Option<PathBuf> {
        match self {
            Place::File(p, _) => p.is_file().then(|| p.clone()),
            Place::Glob {
                prefix,
                package,
                file,
                prefix_match,
            } => package_dirs(prefix, package)
                .into_iter()
                .find_map(|dir| find_in(&dir, file, *prefix_match)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Place::File(p, why) => format!("{} ({why})", p.display()),
            Place::Glob {
                prefix,
                package,
                file,
                prefix_match,
            } => format!(
                "{}/lib*/python3*/*-packages/{package}/{file}{}",
                prefix.display(),
                if *prefix_match { "*" } else { "" }
            ),
        }
    }
}

/// The folders `<prefix>/lib*/python3*/{site,dist}-packages/<package>` that exist, sorted.
fn package_dirs(prefix: &Path, package: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for lib in sorted_entries(prefix, |n| n.starts_with("lib")) {
        for py in sorted_entries(&lib, |n| n.starts_with("python3")) {
            for kind in ["site-packages", "dist-packages"] {
                let d = py.join(kind).join(package);
                if d.is_dir() {
                    out.push(d);
                }
            }
        }
    }
    out
}

fn sorted_entries(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(&keep))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// `dir/file`, or (`prefix_match`) the first file in `dir` whose name starts with `file`.
fn find_in(dir: &Path, file: &str, prefix_match: bool) -> Option<PathBuf> {
    let exact = dir.join(file);
    if exact.is_file() {
        return Some(exact);
    }
    if !prefix_match {
        return None;
    }
    sorted_entries(dir, |n| n.starts_with(file))
        .into_iter()
        .find(|p| p.is_file())
}

/// The flag, else the variable (each an error when it names no file), else the first place holding
/// the file; else one line naming what was tried, in order, and what to do.
fn resolve(
    what: &str,
    flag: (&str, Option<&Path>),
    var: (&str, Option<&Path>),
    places: &[Place],
    remedy: &str,
) -> anyhow::Result<PathBuf> {
    for (name, given) in [flag, var] {
        if let Some(p) = given {
            if p.is_file() {
                return Ok(p.to_path_buf());
            }
            anyhow::bail!("{what}: {name} {} not found (no such file)", p.display());
        }
    }
    if let Some(found) = places.iter().find_map(Place::find) {
        return Ok(found);
    }
    let mut tried = format!("{} (not given), {} (not set)", flag.0, var.0);
    for p in places {
        let _ = write!(tried, ", {}", p.describe());
    }
    anyhow::bail!("{what} not found; tried, in order: {tried}. To fix: {remedy}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A fake installation: `<root>/venv/bin/ditac`, a `ditac_onnx` and an `onnxruntime` package in
    /// the venv, `libditac.so` beside the program, a checkout with both libraries, and the two
    /// variables' files. Each piece can be left out to see the next source win.
    struct Fake {
        root: PathBuf,
    }

    impl Fake {
        fn new(tag: &str) -> Self {
            let root = std::env::temp_dir()
                .join(format!("ditac-runtime-test-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            Fake { root }
        }
        fn file(&self, rel: &str) -> PathBuf {
            let p = self.root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, b"x").unwrap();
            p
        }
        fn search(&self) -> Search {
            Search {
                plugin_var: Some(self.root.join("var/libditac.so").into()),
                ort_var: Some(self.root.join("var/libonnxruntime.so").into()),
                exe: Some(self.root.join("venv/bin/ditac")),
                virtual_env: None,
                checkouts: vec![self.root.join("checkout")],
            }
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn each_plugin_source_wins_over_the_later_ones() {
        let f = Fake::new("plugin");
        let flag = f.file("flag/libditac.so");
        let var = f.file("var/libditac.so");
        let pkg = f.file("venv/lib/python3.11/site-packages/ditac_onnx/libditac.so");
        let beside = f.file("venv/bin/libditac.so");
        let checkout = f.file("checkout/target/release/libditac.so");
        let mut s = f.search();
        assert_eq!(s.plugin(Some(&flag)).unwrap(), flag);
        assert_eq!(s.plugin(None).unwrap(), var);
        s.plugin_var = None;
        assert_eq!(s.plugin(None).unwrap(), pkg);
        fs::remove_file(&pkg).unwrap();
        assert_eq!(s.plugin(None).unwrap(), beside);
        fs::remove_file(&beside).unwrap();
        assert_eq!(s.plugin(None).unwrap(), checkout);
        fs::remove_file(&checkout).unwrap();
        let e = s.plugin(None).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        let order = [
            "--plugin (not given)",
            "$DITAC_PLUGIN (not set)",
            "venv/lib*/python3*/*-packages/ditac_onnx/libditac.so",
            "venv/bin/libditac.so (beside this program)",
            "checkout/target/release/libditac.so (the checkout's build)",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|o| e.find(o).unwrap_or_else(|| panic!("{o:?} not in {e}")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{e}");
    }

    #[test]
    fn each_ort_source_wins_over_the_later_ones() {
        let f = Fake::new("ort");
        let flag = f.file("flag/libonnxruntime.so");
        let var = f.file("var/libonnxruntime.so");
        // The Python package's library carries its version in the name.
        let pkg =
            f.file("venv/lib/python3.12/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0");
        f.file(
            "venv/lib/python3.12/site-packages/onnxruntime/capi/libonnxruntime_providers_shared.so",
        );
        let checkout = f.file(&format!("checkout/.ort/{ORT_VERSION}/libonnxruntime.so"));
        let mut s = f.search();
        assert_eq!(s.ort(Some(&flag)).unwrap(), flag);
        assert_eq!(s.ort(None).unwrap(), var);
        s.ort_var = None;
        assert_eq!(s.ort(None).unwrap(), pkg);
        fs::remove_file(&pkg).unwrap();
        assert_eq!(s.ort(None).unwrap(), checkout);
        fs::remove_file(&checkout).unwrap();
        let e = s.ort(None).unwrap_err().to_string();
        for o in [
            "--ort (not given)",
            "$ORT_DYLIB_PATH (not set)",
            "onnxruntime/capi/libonnxruntime.so*",
            &format!(".ort/{ORT_VERSION}/libonnxruntime.so"),
            "pip install onnxruntime",
        ] {
            assert!(e.contains(o), "{o:?} not in {e}");
        }
    }

    #[test]
    fn an_activated_venv_is_searched_after_the_programs_own() {
        let f = Fake::new("venv");
        let other = f.file("other/lib/python3.11/site-packages/ditac_onnx/libditac.so");
        let mut s = f.search();
        s.plugin_var = None;
        s.virtual_env = Some(f.root.join("other"));
        assert_eq!(s.plugin(None).unwrap(), other);
        let own = f.file("venv/lib/python3.11/dist-packages/ditac_onnx/libditac.so");
        assert_eq!(s.plugin(None).unwrap(), own);
    }

    #[test]
    fn a_given_flag_or_variable_that_names_no_file_is_the_error() {
        let f = Fake::new("given");
        f.file("venv/lib/python3.11/site-packages/ditac_onnx/libditac.so");
        let s = f.search();
        let e = s.plugin(None).unwrap_err().to_string();
        assert!(
            e.contains("$DITAC_PLUGIN /") && e.contains("var/libditac.so not found"),
            "{e}"
        );
        let e = s
            .plugin(Some(Path::new("/nonexistent/p.so")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--plugin /nonexistent/p.so not found"), "{e}");
    }
}
