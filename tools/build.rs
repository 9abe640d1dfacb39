//! Build script of the `ditac` command: the git commit it is built from, for `ditac --version`
//! (`$DITAC_GIT_COMMIT` when set, e.g. by a packager building outside a checkout; else `git`; else
//! "unknown").

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=DITAC_GIT_COMMIT");
    let commit = std::env::var("DITAC_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // A new commit or checkout reruns this script: HEAD and the branch it names (or the packed refs).
    for what in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", what]) {
            if Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &r]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rustc-env=DITAC_GIT_COMMIT={commit}");
}
