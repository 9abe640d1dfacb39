"""Every repository path a document names exists, and every environment variable the project reads is
documented.

Paths: in each Markdown file of the repository, the targets of relative links (resolved from the
file's folder) and every word in code (inline code and fenced blocks) that starts with one of the
repository's top-level folders or files, e.g. `tools/src/spec.rs` or `models/regression/train.npz`.
Paths that only exist after a build, a set-up or a run (target/, .venv*/, fuzz/corpus/) are those
the repository ignores (.gitignore), and are not checked; a word may be a glob (`tests/plugin_*.rs`).

Variables: each `DITAC_*` and `ORT_*` name that the code, tests and scripts read (a string literal in
Rust or Python, `$NAME`/`${NAME` in shell) must appear in docs/environment.md.
"""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tracked(pattern=None):
    """Files of the repository: tracked, plus new ones not ignored (the working tree as it will be)."""
    args = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    if pattern:
        args.append(pattern)
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [p for p in out.splitlines() if (ROOT / p).exists()]


TOP = {p.split("/")[0] for p in tracked()}
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
WORD = re.compile(r"[A-Za-z0-9_.*/\-]+")


def code_text(md):
    """Inline code spans and the lines of fenced blocks."""
    spans, fenced, inside = [], [], False
    for line in md.splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        (fenced if inside else spans).append(line)
    return [m.group(1) for l in spans for m in CODE_SPAN.finditer(l)] + fenced


def named_paths(md):
    for text in code_text(md):
        for word in WORD.findall(text):
            word = word.rstrip(".,:;")
            first = word.split("/")[0]
            if first in TOP and ("/" in word or "." in word) and first != word.rstrip("/") or word in TOP and "." in word:
                yield word


def ignored(paths):
    """The paths git ignores (outputs of builds, set-ups and runs)."""
    r = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(paths),
                       capture_output=True, text=True)
    return set(r.stdout.splitlines())


def exists(rel):
    rel = rel.rstrip("/")
    if "*" in rel:
        return any(ROOT.glob(rel))
    return (ROOT / rel).exists()


def test_every_named_path_exists():
    missing = []
    for doc in tracked("*.md"):
        md = (ROOT / doc).read_text()
        absent = [w for w in sorted(set(named_paths(md))) if not exists(w)]
        generated = ignored(absent) if absent else set()
        missing += [f"{doc}: `{w}`" for w in absent if w not in generated]
        for target in LINK.findall(md):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = target.split("#")[0]
            if path and not (ROOT / doc).parent.joinpath(path).exists():
                missing.append(f"{doc}: link ({target})")
    assert not missing, "named in a document but not in the repository:\n" + "\n".join(missing)


def test_every_environment_variable_is_documented():
    documented = (ROOT / "docs/environment.md").read_text()
    # A literal on a line that reads the environment (env::var, os.environ, a const ..._ENV), or a
    # shell expansion; other literals (CUDA macro names in tests) are not variables.
    pattern = re.compile(r"""["'](DITAC_[A-Z0-9_]+|ORT_[A-Z0-9_]+)["']|\$\{?(DITAC_[A-Z0-9_]+|ORT_[A-Z0-9_]+)""")
    read = {}
    for f in tracked():
        if not f.endswith((".rs", ".py", ".sh")) or f.startswith("tests/docs/"):
            continue
        for line in (ROOT / f).read_text(errors="replace").splitlines():
            for m in pattern.finditer(line):
                if m.group(2) or "env" in line.lower():
                    read.setdefault(m.group(1) or m.group(2), f)
    undocumented = sorted(f"{v} (read in {f})" for v, f in read.items() if f"`{v}`" not in documented)
    assert read, "found no variable at all: the pattern is wrong"
    assert not undocumented, "not in docs/environment.md:\n" + "\n".join(undocumented)
