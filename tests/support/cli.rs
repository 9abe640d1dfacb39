//! The `ditac` binary as users and scripts run it. For the tests of `ditac-tools` (the package that
//! builds the binary).

use super::oracle::repo_root;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `ditac ARGS` in the repository root: (exit status, stdout, stderr).
pub fn ditac(args: &[&str]) -> (i32, String, String) {
    ditac_with_stdin(args, "")
}

/// Runs `ditac ARGS` in the repository root with `stdin` as its standard input.
pub fn ditac_with_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ditac"))
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may exit on bad arguments before reading: a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `ditac ARGS` in the repository root with `env` set on top of this process's environment,
/// less `DITAC_MAX_BYTES` (so that the command sees its default memory budget unless `env` sets one).
pub fn ditac_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ditac"));
    c.args(args)
        .current_dir(repo_root())
        .env_remove("DITAC_MAX_BYTES");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `ditac ARGS`, asserts that it succeeded and returns its stdout.
#[track_caller]
pub fn ditac_ok(args: &[&str]) -> String {
    let (code, out, err) = ditac(args);
    assert_eq!(code, 0, "ditac {args:?}: {err}");
    out
}

/// A fresh, empty folder for one test of this process.
pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ditac-tests-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A path as a command-line argument.
pub fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}
