//! Every `tests/*.rs` is a test target of one of the two packages. The test files of both packages
//! live in this folder and are listed by hand (`autotests = false`: the plugin package must not
//! build the tools' tests), so a new file that is not listed would never run; this test names it.

use std::path::Path;

#[test]
fn every_test_file_is_a_test_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifests = [
        (root.join("Cargo.toml"), "tests/"),
        (root.join("tools/Cargo.toml"), "../tests/"),
    ];
    let mut listed = Vec::new();
    for (manifest, prefix) in &manifests {
        let text = std::fs::read_to_string(manifest).expect("reading a manifest");
        for line in text.lines() {
            let line = line.trim();
            if let Some(path) = line
                .strip_prefix("path = \"")
                .and_then(|p| p.strip_suffix('"'))
                .and_then(|p| p.strip_prefix(prefix))
            {
                listed.push(path.to_string());
            }
        }
    }
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("tests")).expect("reading tests/") {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".rs") && !listed.contains(&name) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "tests/{missing:?} are not [[test]] targets of Cargo.toml or tools/Cargo.toml: they never run"
    );
}
