//! Every file the tools write goes through here: one atomic writer.
//!
//! * An output is written to a fresh temporary file in its own folder (created exclusively, so a
//!   planted link is never followed) and renamed over the destination: a failed command leaves
//!   nothing behind and never a half-written file.
//! * The destination must be absent or a regular file: a symlink, FIFO, socket, device node or
//!   folder there is refused (renaming over `/dev/full` would replace the device node).
//! * No output may be one of the command's inputs: every file the tools read is recorded
//!   ([`record_input`]), and an output that is the same file (same path, or the same inode through
//!   another name or a hard link) is refused.
//! * Files written beside an output (external data) must stay inside the output's folder:
//!   [`Output::confined`] refuses absolute paths, `..` and folders that resolve elsewhere.
//! * One rule for output folders, whatever the command: a missing folder is created (with its
//!   parents, silently, as `mkdir -p`) when the output is checked, which every command does before
//!   its work starts ([`Output::new`] for a file, [`output_folder`] for a folder of outputs).

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

/// The inputs read so far in this process, as (device, inode) and canonical paths.
static INPUTS: Mutex<BTreeSet<FileId>> = Mutex::new(BTreeSet::new());

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FileId {
    dev: u64,
    ino: u64,
    path: PathBuf,
}

fn file_id(path: &Path) -> Option<FileId> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    #[cfg(not(unix))]
    let (dev, ino) = {
        let _ = meta;
        (0, 0)
    };
    Some(FileId {
        dev,
        ino,
        path: std::fs::canonicalize(path).ok()?,
    })
}

/// Records `path` as an input of this command: no output may be written over it.
pub fn record_input(path: &Path) {
    if let Some(id) = file_id(path) {
        INPUTS.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
    }
}

/// The input that `path` is, if any.
fn as_input(path: &Path) -> Option<PathBuf> {
    let id = file_id(path)?;
    let inputs = INPUTS.lock().unwrap_or_else(|e| e.into_inner());
    inputs
        .iter()
        .find(|i| {
            // The same inode, as long as the input is still that file (an inode is reused once
            // its file is deleted).
            let same_inode = cfg!(unix)
                && i.dev == id.dev
                && i.ino == id.ino
                && file_id(&i.path).is_some_and(|now| now.dev == i.dev && now.ino == i.ino);
            same_inode || i.path == id.path
        })
        .map(|i| i.path.clone())
}

/// An output folder, created with its parents when missing: an error when something other than a
/// folder is in the way, or it cannot be created.
pub fn output_folder(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if std::fs::symlink_metadata(dir).is_ok() {
        bail!(
            "the output folder {} exists and is not a folder",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the output folder {}", dir.display()))
}

/// A checked output path: its folder exists (created if it was missing), and the path is absent or a regular file that is not
/// one of the inputs.
#[derive(Debug, Clone)]
pub struct Output {
    path: PathBuf,
    dir: PathBuf,
    name: String,
}

impl Output {
    pub fn new(path: &Path) -> Result<Output> {
        let text = path.as_os_str().to_string_lossy();
        let name = match path.file_name() {
            Some(n) if !text.ends_with('/') => n.to_string_lossy().into_owned(),
            _ => bail!("{} is not a file name", path.display()),
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        output_folder(&dir)?;
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("cannot check the output {}: {e}", path.display()),
            Ok(m) if m.is_dir() => bail!(
                "{} is a folder: expected the output's file name",
                path.display()
            ),
            Ok(m) if !m.file_type().is_file() => bail!(
                "the output {} exists and is not a regular file ({}): refusing to replace it",
                path.display(),
                kind_of(&m)
            ),
            Ok(_) => {}
        }
        if let Some(input) = as_input(path) {
            bail!(
                "the output {} is the input {}: write to another file (inputs are never modified)",
                path.display(),
                input.display()
            );
        }
        Ok(Output {
            path: path.to_path_buf(),
            dir,
            name,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder the output goes to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the output through `write` (buffered) into a temporary file, then renames it into
    /// place. On error the temporary file is removed and the destination is untouched.
    pub fn write_with(&self, write: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
        let tmp = self
            .dir
            .join(format!(".{}.tmp-{}", self.name, std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let result = (|| -> Result<()> {
            let mut w = BufWriter::with_capacity(1 << 20, file);
            write(&mut w)?;
            let file = w
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("writing {}", tmp.display()))?;
            file.sync_all().ok();
            drop(file);
            // Checked again just before the rename: the destination may have changed meanwhile.
            Output::new(&self.path)?;
            std::fs::rename(&tmp, &self.path)
                .with_context(|| format!("writing {}", self.path.display()))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Writes `bytes` as the output.
    pub fn write_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.write_with(|w| {
            w.write_all(bytes)
                .with_context(|| format!("writing {}", self.path.display()))
        })
    }

    /// `rel` (relative to the output's folder, e.g. an external data `location`) as a path inside
    /// that folder: absolute paths, `..` and folders that resolve outside it are refused. Creates
    /// the missing folders on the way.
    pub fn confined(&self, rel: &Path) -> Result<PathBuf> {
        let escapes = rel.is_absolute()
            || rel.components().any(|c| {
                matches!(
                    c,
                    Component::ParentDir | Component::RootDir | Component::Prefix(_)
                )
            });
        if escapes || rel.as_os_str().is_empty() {
            bail!(
                "external data location \"{}\" is not inside the output's folder {}: refusing to write it",
                rel.display(),
                self.dir.display()
            );
        }
        let dst = self.dir.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
            let root = std::fs::canonicalize(&self.dir)?;
            let real = std::fs::canonicalize(parent)?;
            if !real.starts_with(&root) {
                bail!(
                    "external data location \"{}\" resolves to {}, outside the output's folder {}: refusing to write it",
                    rel.display(),
                    real.display(),
                    root.display()
                );
            }
        }
        Ok(dst)
    }
}

fn kind_of(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device node";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a plain file"
    }
}

/// A folder written in full under a temporary name beside its destination, then renamed into
/// place ([`OutputDir::commit`]): an error while writing leaves the destination as it was (the
/// temporary folder is removed when the value drops uncommitted).
#[derive(Debug)]
pub struct OutputDir {
    tmp: Option<PathBuf>,
    dest: PathBuf,
}

impl OutputDir {
    /// An empty temporary folder for `parent/name` (`parent` must exist).
    pub fn new(parent: &Path, name: &str) -> Result<OutputDir> {
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(OutputDir {
            tmp: Some(tmp),
            dest: parent.join(name),
        })
    }

    /// The temporary folder (write here).
    pub fn path(&self) -> &Path {
        self.tmp.as_deref().expect("an uncommitted OutputDir")
    }

    /// Creates the subfolder `rel` of the temporary folder; returns its path.
    pub fn create_dir(&self, rel: &str) -> Result<PathBuf> {
        let d = self.path().join(rel);
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        Ok(d)
    }

    /// Writes the file `rel` (inside the temporary folder) through [`Output`].
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        Output::new(&self.path().join(rel))?.write_bytes(bytes)
    }

    /// Copies the file `src` to `rel` inside the temporary folder.
    pub fn copy_in(&self, src: &Path, rel: &str) -> Result<()> {
        let to = self.path().join(rel);
        std::fs::copy(src, &to).with_context(|| format!("writing {}", to.display()))?;
        Ok(())
    }

    /// Moves the folder to its destination, replacing what is there.
    pub fn commit(mut self) -> Result<()> {
        if self.dest.exists() {
            std::fs::remove_dir_all(&self.dest)
                .with_context(|| format!("cannot replace {}", self.dest.display()))?;
        }
        let tmp = self.tmp.take().expect("an uncommitted OutputDir");
        let r = std::fs::rename(&tmp, &self.dest)
            .with_context(|| format!("writing {}", self.dest.display()));
        if r.is_err() {
            self.tmp = Some(tmp);
        }
        r
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if let Some(p) = self.tmp.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Opens an input for reading and records it (see [`record_input`]).
pub fn open_input(path: &Path) -> std::io::Result<File> {
    let f = File::open(path)?;
    record_input(path);
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ditac-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writes_atomically_and_refuses_inputs_links_and_escapes() {
        let d = tmp("unit");
        let out = d.join("a.bin");
        Output::new(&out).unwrap().write_bytes(b"one").unwrap();
        Output::new(&out).unwrap().write_bytes(b"two").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"two");
        // A failed write leaves the old content and no temporary file.
        let e = Output::new(&out)
            .unwrap()
            .write_with(|_| bail!("boom"))
            .unwrap_err();
        assert_eq!(e.to_string(), "boom");
        assert_eq!(std::fs::read(&out).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);

        #[cfg(unix)]
        {
            let link = d.join("link.bin");
            std::os::unix::fs::symlink(&out, &link).unwrap();
            let e = Output::new(&link).unwrap_err().to_string();
            assert!(e.contains("is not a regular file (a symbolic link)"), "{e}");
        }
        let input = d.join("in.bin");
        std::fs::write(&input, b"in").unwrap();
        record_input(&input);
        let e = Output::new(&input).unwrap_err().to_string();
        assert!(e.contains("is the input"), "{e}");
        let hard = d.join("hard.bin");
        std::fs::hard_link(&input, &hard).unwrap();
        let e = Output::new(&hard).unwrap_err().to_string();
        assert!(e.contains("is the input"), "{e}");

        let o = Output::new(&out).unwrap();
        for bad in ["../x.bin", "/etc/x.bin", "a/../../x.bin"] {
            let e = o.confined(Path::new(bad)).unwrap_err().to_string();
            assert!(
                e.contains("is not inside the output's folder"),
                "{bad}: {e}"
            );
        }
        assert_eq!(o.confined(Path::new("w/x.bin")).unwrap(), d.join("w/x.bin"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
