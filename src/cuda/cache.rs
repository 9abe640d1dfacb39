//! The on-disk cache of compiled kernels: NVRTC takes 15–60 s of CPU per process, paid once
//! per (source, options, target, NVRTC version) per machine instead. Plain file handling — no
//! CUDA needed — so it is tested on any machine.
//!
//! * Where: `$DITAC_CUDA_CACHE` (a folder; `0` or empty turns the cache off), else
//!   `$XDG_CACHE_HOME/ditac/cuda`, else `$HOME/.cache/ditac/cuda`.
//! * Key: a 128-bit hash of the source text, every NVRTC option (the target architecture is
//!   one), the output kind and NVRTC's version; without a known NVRTC version nothing is cached.
//! * Carried images ([`Key::carried`]): the same key without NVRTC's version, written on purpose
//!   by `gpu_check --precompile` on a machine with NVRTC and no GPU (tests/gpu/prepare.sh), so
//!   that a GPU machine spends no time compiling — or needs no NVRTC at all. They are looked up
//!   after this NVRTC's own entry; a carried cubin the driver refuses falls back to PTX as any
//!   cubin does.
//! * A file holds a header line with the full key and the image's length, then the image; a file
//!   that does not match (truncated, another key, not an ELF cubin or a NUL-terminated PTX) is a
//!   miss. Writes go to a temporary file renamed into place, so readers never see half a file.
//!   Failing to read or write the cache is never an error: NVRTC compiles as before.

use std::path::{Path, PathBuf};

/// The image for (source, options, kind) in `dir`: this NVRTC's own entry first (when its
/// version is known), else a carried one (whichever NVRTC made it, or none is here at all).
pub fn lookup(
    dir: &Path,
    source: &str,
    opts: &[String],
    cubin: bool,
    nvrtc: Option<(i32, i32)>,
) -> Option<Vec<u8>> {
    nvrtc
        .and_then(|v| Key::in_dir(dir, source, opts, cubin, v))
        .and_then(|k| k.read())
        .or_else(|| Key::carried(dir, source, opts, cubin)?.read())
}

/// The cache file of one compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    path: PathBuf,
    header: String,
    cubin: bool,
}

const ENV: &str = "DITAC_CUDA_CACHE";

/// The cache folder from the environment, `None` when turned off or no home is known.
pub fn dir() -> Option<PathBuf> {
    match std::env::var_os(ENV) {
        Some(v) if v.is_empty() || v == "0" => None,
        Some(v) => Some(PathBuf::from(v)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .map(|c| c.join("ditac").join("cuda")),
    }
}

fn fnv1a(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = seed;
    for p in parts {
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        for b in (p.len() as u64).to_le_bytes().iter().chain(p.iter()) {
            h = (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

impl Key {
    /// The key in the environment's cache folder (`None`: no cache).
    pub fn new(
        source: &str,
        opts: &[String],
        cubin: bool,
        nvrtc: Option<(i32, i32)>,
    ) -> Option<Key> {
        Key::in_dir(&dir()?, source, opts, cubin, nvrtc?)
    }

    pub fn in_dir(
        dir: &Path,
        source: &str,
        opts: &[String],
        cubin: bool,
        nvrtc: (i32, i32),
    ) -> Option<Key> {
        Key::named(
            dir,
            source,
            opts,
            cubin,
            format!("nvrtc {}.{}", nvrtc.0, nvrtc.1),
        )
    }

    /// The carried image of (source, options, kind) in `dir`, whichever NVRTC made it.
    pub fn carried(dir: &Path, source: &str, opts: &[String], cubin: bool) -> Option<Key> {
        Key::named(dir, source, opts, cubin, "carried".to_string())
    }

    fn named(
        dir: &Path,
        source: &str,
        opts: &[String],
        cubin: bool,
        version: String,
    ) -> Option<Key> {
        let kind: &[u8] = if cubin { b"cubin" } else { b"ptx" };
        let mut parts: Vec<&[u8]> = vec![source.as_bytes(), kind, version.as_bytes()];
        parts.extend(opts.iter().map(|o| o.as_bytes()));
        let hex = format!(
            "{:016x}{:016x}",
            fnv1a(0xcbf2_9ce4_8422_2325, &parts),
            fnv1a(0x6c62_272e_07bb_0142, &parts)
        );
        let ext = if cubin { "cubin" } else { "ptx" };
        Some(Key {
            path: dir.join(format!("ditac-{hex}.{ext}")),
            header: format!("ditac-cuda-cache 1 {hex} {version}"),
            cubin,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached image, when a valid one is there.
    pub fn read(&self) -> Option<Vec<u8>> {
        let data = std::fs::read(&self.path).ok()?;
        let nl = data.iter().position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&data[..nl]).ok()?;
        let (h, len) = header.rsplit_once(' ')?;
        let len: usize = len.parse().ok()?;
        let image = &data[nl + 1..];
        let valid = h == self.header
            && image.len() == len
            && if self.cubin {
                image.starts_with(b"\x7fELF")
            } else {
                image.last() == Some(&0)
            };
        valid.then(|| image.to_vec())
    }

    /// Stores `image` (best effort: errors are ignored).
    pub fn write(&self, image: &[u8]) {
        let Some(dir) = self.path.parent() else {
            return;
        };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let mut data = format!("{} {}\n", self.header, image.len()).into_bytes();
        data.extend_from_slice(image);
        if std::fs::write(&tmp, &data).is_err() || std::fs::rename(&tmp, &self.path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("ditac-cache-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn keys_differ_by_every_input() {
        let d = Path::new("/c");
        let o = vec!["--gpu-architecture=sm_90".to_string()];
        let o2 = vec!["--gpu-architecture=sm_80".to_string()];
        let k = Key::in_dir(d, "src", &o, true, (13, 0)).unwrap();
        for other in [
            Key::in_dir(d, "src2", &o, true, (13, 0)),
            Key::in_dir(d, "src", &o2, true, (13, 0)),
            Key::in_dir(d, "src", &o, false, (13, 0)),
            Key::in_dir(d, "src", &o, true, (13, 1)),
        ] {
            assert_ne!(other.unwrap().path, k.path);
        }
        assert_eq!(Key::in_dir(d, "src", &o, true, (13, 0)).unwrap(), k);
        // A carried image is another file, the same for every NVRTC version.
        let c = Key::carried(d, "src", &o, true).unwrap();
        assert_ne!(c.path, k.path);
        assert_ne!(c.path, Key::carried(d, "src", &o, false).unwrap().path);
        assert_ne!(c.path, Key::carried(d, "src", &o2, true).unwrap().path);
    }

    #[test]
    fn lookup_prefers_this_nvrtc_then_a_carried_image_even_without_nvrtc() {
        let d = tmp("lookup");
        let o = vec!["--gpu-architecture=sm_90".to_string()];
        assert_eq!(lookup(&d, "src", &o, true, Some((13, 0))), None);
        assert_eq!(lookup(&d, "src", &o, true, None), None);
        Key::carried(&d, "src", &o, true)
            .unwrap()
            .write(b"\x7fELF carried");
        // No NVRTC here (no version), or another NVRTC: the carried image.
        assert_eq!(
            lookup(&d, "src", &o, true, None).as_deref(),
            Some(&b"\x7fELF carried"[..])
        );
        assert_eq!(
            lookup(&d, "src", &o, true, Some((13, 2))).as_deref(),
            Some(&b"\x7fELF carried"[..])
        );
        // This NVRTC's own image wins when both are there.
        Key::in_dir(&d, "src", &o, true, (13, 2))
            .unwrap()
            .write(b"\x7fELF own");
        assert_eq!(
            lookup(&d, "src", &o, true, Some((13, 2))).as_deref(),
            Some(&b"\x7fELF own"[..])
        );
        // Another source, options or kind: no image.
        assert_eq!(lookup(&d, "src2", &o, true, None), None);
        assert_eq!(lookup(&d, "src", &o, false, None), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_carried_image_is_not_read_as_a_versioned_one() {
        let d = tmp("carried");
        let o = vec!["--gpu-architecture=sm_90".to_string()];
        let carried = Key::carried(&d, "source", &o, true).unwrap();
        carried.write(b"\x7fELF carried");
        assert_eq!(carried.read(), Some(b"\x7fELF carried".to_vec()));
        let versioned = Key::in_dir(&d, "source", &o, true, (13, 0)).unwrap();
        assert_eq!(versioned.read(), None);
        // Its file renamed to the versioned name: the header differs, a miss.
        std::fs::copy(carried.path(), versioned.path()).unwrap();
        assert_eq!(versioned.read(), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn images_round_trip_and_bad_files_miss() {
        let d = tmp("rt");
        let o = vec!["--gpu-architecture=sm_90".to_string()];
        let k = Key::in_dir(&d, "source", &o, true, (13, 0)).unwrap();
        assert_eq!(k.read(), None);
        let cubin = b"\x7fELF and the rest".to_vec();
        k.write(&cubin);
        assert_eq!(k.read(), Some(cubin.clone()));
        // Truncated: a miss.
        let full = std::fs::read(k.path()).unwrap();
        std::fs::write(k.path(), &full[..full.len() - 1]).unwrap();
        assert_eq!(k.read(), None);
        // Not an ELF file under a cubin key: a miss.
        k.write(b"not a cubin");
        assert_eq!(k.read(), None);
        // PTX must end with its NUL.
        let p = Key::in_dir(&d, "source", &o, false, (13, 0)).unwrap();
        p.write(b".version 8.0\0");
        assert_eq!(p.read(), Some(b".version 8.0\0".to_vec()));
        p.write(b".version 8.0");
        assert_eq!(p.read(), None);
        // Another key's file under this name (a hash collision, or a renamed file): a miss.
        let other = Key::in_dir(&d, "other", &o, true, (13, 0)).unwrap();
        other.write(&cubin);
        std::fs::copy(other.path(), k.path()).unwrap();
        assert_eq!(k.read(), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
