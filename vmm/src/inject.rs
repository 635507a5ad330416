//! `--inject HOST_PATH[:GUEST_PATH]`: host files in the guest without
//! rebuilding its image.
//!
//! The kernel unpacks an initramfs made of several archives one after the
//! other, compressed or not, later entries replacing earlier ones. dxvmm
//! writes a newc cpio archive of the injected files and hands the kernel the
//! image's initramfs followed by that archive, as one file: an anonymous
//! memory file (memfd) that the guest engine opens as `/proc/self/fd/N`.
//! Nothing is written to disk, so nothing is left behind, whatever happens
//! to dxvmm.
//!
//! Rules:
//! - GUEST_PATH defaults to `/` and the host path's last component
//!   (`--inject ./t` puts the file at `/t`); a GUEST_PATH that ends in `/`
//!   gets the host name appended; it must be absolute, without `..`.
//! - A directory is injected with everything under it.
//! - Symbolic links are followed (the guest gets what they point to);
//!   a dangling link or a directory cycle is an error.
//! - Permission bits and modification times are kept; everything belongs
//!   to root. Parent directories that the archive has to create get 0755.
//! - Paths the guest's /init mounts over (/proc, /sys, /dev, /tmp, /run)
//!   are refused: the files would be hidden.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Mount points of images/init, which hide whatever the initramfs has there.
const MOUNTED_OVER: &[&str] = &["/proc", "/sys", "/dev", "/tmp", "/run"];
/// newc stores sizes in 32 bits.
const MAX_FILE_SIZE: u64 = u32::MAX as u64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--inject {0}: no such file or directory")]
    Missing(String),
    #[error("--inject {spec}: the guest path '{guest}' is not absolute")]
    NotAbsolute { spec: String, guest: String },
    #[error("--inject {spec}: the guest path '{guest}' contains '..'")]
    DotDot { spec: String, guest: String },
    #[error(
        "--inject {0}: give a guest path (HOST_PATH:GUEST_PATH): the host path has no name to use"
    )]
    NoName(String),
    #[error("--inject {spec}: {guest} would be hidden by the guest's {mount} mount")]
    Hidden {
        spec: String,
        guest: String,
        mount: &'static str,
    },
    #[error("--inject {spec}: {guest}: a file cannot replace the guest's root directory")]
    FileAtRoot { spec: String, guest: String },
    #[error("--inject: {0} is a dangling symbolic link")]
    Dangling(PathBuf),
    #[error("--inject: {0} is a symbolic link back into a directory being injected")]
    Cycle(PathBuf),
    #[error("--inject: {0} is a {1}; only files and directories can be injected")]
    Special(PathBuf, &'static str),
    #[error("--inject: {0} is larger than 4 GiB, the most a cpio archive entry holds")]
    TooLarge(PathBuf),
    #[error("--inject: cannot read {0}: {1}")]
    Read(PathBuf, io::Error),
    #[error("initramfs not found at {0} (build the images: images/build.sh)")]
    MissingBase(PathBuf),
    #[error("cannot read the initramfs {0}: {1}")]
    Base(PathBuf, io::Error),
    #[error("cannot build the guest's initramfs in memory: {0}")]
    Memfd(io::Error),
}

/// One `--inject` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectSpec {
    /// As the user wrote it, for error messages.
    pub text: String,
    pub host: PathBuf,
    /// `None`: `/` and the host path's name.
    pub guest: Option<String>,
}

impl InjectSpec {
    /// Parses `HOST_PATH[:GUEST_PATH]`, splitting at the last `:`, and
    /// checks the guest path. The host path is checked when injected.
    pub fn parse(text: &str) -> Result<InjectSpec, Error> {
        let (host, guest) = match text.rsplit_once(':') {
            Some((h, g)) => (h, Some(g.to_string())),
            None => (text, None),
        };
        let spec = InjectSpec {
            text: text.to_string(),
            host: PathBuf::from(host),
            guest,
        };
        if let Some(g) = &spec.guest {
            spec.check_guest(g)?;
        }
        Ok(spec)
    }

    fn check_guest(&self, guest: &str) -> Result<(), Error> {
        if !guest.starts_with('/') {
            return Err(Error::NotAbsolute {
                spec: self.text.clone(),
                guest: guest.to_string(),
            });
        }
        if guest.split('/').any(|c| c == "..") {
            return Err(Error::DotDot {
                spec: self.text.clone(),
                guest: guest.to_string(),
            });
        }
        Ok(())
    }

    /// Where the host path goes in the guest, normalized (`/a/b`, or `/`).
    fn guest_path(&self) -> Result<String, Error> {
        let name = || -> Result<String, Error> {
            let name = self
                .host
                .file_name()
                .filter(|n| *n != "." && *n != "..")
                .map(|n| n.to_string_lossy().into_owned())
                .or_else(|| {
                    fs::canonicalize(&self.host)
                        .ok()?
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                });
            name.ok_or_else(|| Error::NoName(self.text.clone()))
        };
        let raw = match &self.guest {
            None => format!("/{}", name()?),
            Some(g) if g.ends_with('/') && g != "/" => format!("{g}{}", name()?),
            Some(g) => g.clone(),
        };
        let parts: Vec<&str> = raw
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        Ok(format!("/{}", parts.join("/")))
    }
}

impl FromStr for InjectSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        InjectSpec::parse(s)
    }
}

/// The guest's initramfs: the image's, then the injected files' archive,
/// in a memory file that lives as long as this value.
pub struct Initramfs {
    fd: OwnedFd,
}

impl Initramfs {
    /// Builds it from the image's initramfs `base` and the injected files.
    pub fn build(base: &Path, specs: &[InjectSpec]) -> Result<Initramfs, Error> {
        // The user's paths first: they are the likelier mistake.
        let entries = collect(specs)?;
        if !base.is_file() {
            return Err(Error::MissingBase(base.to_path_buf()));
        }
        let fd = memfd()?;
        let mut file = File::from(fd.try_clone().map_err(Error::Memfd)?);
        let mut src = File::open(base).map_err(|e| Error::Base(base.to_path_buf(), e))?;
        let len = io::copy(&mut src, &mut file).map_err(|e| Error::Base(base.to_path_buf(), e))?;
        // An uncompressed archive must start 4-aligned; the kernel skips
        // the zeros between archives.
        let pad = (4 - (len % 4) as usize) % 4;
        let mut out = BufWriter::new(file);
        out.write_all(&[0u8; 3][..pad]).map_err(Error::Memfd)?;
        let mut cpio = Cpio::new(out);
        write_entries(&mut cpio, &entries)?;
        let mut out = cpio.finish().map_err(Error::Memfd)?;
        out.flush().map_err(Error::Memfd)?;
        let mut file = out.into_inner().map_err(|e| Error::Memfd(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(Error::Memfd)?;
        Ok(Initramfs { fd })
    }

    /// A path that names the memory file, in dxvmm and in the processes it
    /// starts (the descriptor is inherited).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

fn memfd() -> Result<OwnedFd, Error> {
    let name = CString::new("dxvmm-initramfs").map_err(|e| Error::Memfd(io::Error::other(e)))?;
    // No MFD_CLOEXEC: the UML kernel, a child process, opens the file
    // through its own /proc/self/fd.
    // SAFETY: memfd_create reads the NUL-terminated name and returns a new
    // descriptor or -1; it touches no other memory.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        return Err(Error::Memfd(io::Error::last_os_error()));
    }
    // SAFETY: memfd_create succeeded; the descriptor is open and ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What goes into the archive, in order.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir {
        guest: String,
        mode: u32,
        mtime: u64,
    },
    File {
        guest: String,
        host: PathBuf,
        mode: u32,
        mtime: u64,
        size: u64,
    },
}

fn collect(specs: &[InjectSpec]) -> Result<Vec<Entry>, Error> {
    let mut entries = Vec::new();
    for spec in specs {
        let guest = spec.guest_path()?;
        let meta = follow(&spec.host).map_err(|e| match e {
            Error::Read(_, ref io) if io.kind() == io::ErrorKind::NotFound => {
                Error::Missing(spec.text.clone())
            }
            e => e,
        })?;
        if meta.is_file() && guest == "/" {
            return Err(Error::FileAtRoot {
                spec: spec.text.clone(),
                guest,
            });
        }
        let mut ancestors = Vec::new();
        walk(spec, &spec.host, &meta, guest, &mut ancestors, &mut entries)?;
    }
    Ok(entries)
}

/// Metadata of what `path` names, links followed.
fn follow(path: &Path) -> Result<Metadata, Error> {
    match fs::metadata(path) {
        Ok(m) => Ok(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                Err(Error::Dangling(path.to_path_buf()))
            } else {
                Err(Error::Read(path.to_path_buf(), e))
            }
        }
        Err(e) => Err(Error::Read(path.to_path_buf(), e)),
    }
}

fn check_hidden(spec: &InjectSpec, guest: &str) -> Result<(), Error> {
    for &mount in MOUNTED_OVER {
        if guest == mount
            || guest
                .strip_prefix(mount)
                .is_some_and(|r| r.starts_with('/'))
        {
            return Err(Error::Hidden {
                spec: spec.text.clone(),
                guest: guest.to_string(),
                mount,
            });
        }
    }
    Ok(())
}

fn walk(
    spec: &InjectSpec,
    host: &Path,
    meta: &Metadata,
    guest: String,
    ancestors: &mut Vec<(u64, u64)>,
    out: &mut Vec<Entry>,
) -> Result<(), Error> {
    check_hidden(spec, &guest)?;
    let mode = meta.permissions().mode() & 0o7777;
    let mtime = meta.mtime().max(0) as u64;
    if meta.is_file() {
        if meta.len() > MAX_FILE_SIZE {
            return Err(Error::TooLarge(host.to_path_buf()));
        }
        out.push(Entry::File {
            guest,
            host: host.to_path_buf(),
            mode,
            mtime,
            size: meta.len(),
        });
        return Ok(());
    }
    if !meta.is_dir() {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        let kind = if t.is_fifo() {
            "named pipe"
        } else if t.is_socket() {
            "socket"
        } else if t.is_block_device() || t.is_char_device() {
            "device node"
        } else {
            "special file"
        };
        return Err(Error::Special(host.to_path_buf(), kind));
    }
    let id = (meta.dev(), meta.ino());
    if ancestors.contains(&id) {
        return Err(Error::Cycle(host.to_path_buf()));
    }
    if guest != "/" {
        out.push(Entry::Dir {
            guest: guest.clone(),
            mode,
            mtime,
        });
    }
    let mut children: Vec<_> = fs::read_dir(host)
        .and_then(|d| d.map(|e| e.map(|e| e.file_name())).collect())
        .map_err(|e| Error::Read(host.to_path_buf(), e))?;
    children.sort();
    ancestors.push(id);
    for name in children {
        let child = host.join(&name);
        let child_meta = follow(&child)?;
        let child_guest = match guest.as_str() {
            "/" => format!("/{}", name.to_string_lossy()),
            g => format!("{g}/{}", name.to_string_lossy()),
        };
        walk(spec, &child, &child_meta, child_guest, ancestors, out)?;
    }
    ancestors.pop();
    Ok(())
}

fn write_entries<W: Write>(cpio: &mut Cpio<W>, entries: &[Entry]) -> Result<(), Error> {
    for e in entries {
        match e {
            Entry::Dir { guest, mode, mtime } => {
                cpio.parents(guest).map_err(Error::Memfd)?;
                cpio.dir(guest, *mode, *mtime).map_err(Error::Memfd)?;
            }
            Entry::File {
                guest,
                host,
                mode,
                mtime,
                size,
            } => {
                cpio.parents(guest).map_err(Error::Memfd)?;
                let mut f = File::open(host).map_err(|e| Error::Read(host.clone(), e))?;
                // A file that changes size while it is copied would corrupt
                // the archive: copy exactly the size in the header.
                cpio.file(guest, *mode, *mtime, *size, &mut f)
                    .map_err(|e| Error::Read(host.clone(), e))?;
            }
        }
    }
    Ok(())
}

/// A writer of newc ("070701") cpio archives, as the kernel's initramfs
/// unpacker reads them (Documentation/driver-api/early-userspace).
struct Cpio<W: Write> {
    out: W,
    ino: u32,
    dirs: HashSet<String>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;

impl<W: Write> Cpio<W> {
    fn new(out: W) -> Self {
        Cpio {
            out,
            // Inode numbers only pair up hard links (nlink > 1); ours are
            // all distinct and have nlink 1.
            ino: 0x00d0_0000,
            dirs: HashSet::new(),
        }
    }

    fn header(
        &mut self,
        name: &str,
        mode: u32,
        mtime: u64,
        nlink: u32,
        size: u32,
    ) -> io::Result<()> {
        // Names are relative to the root, as the kernel expects.
        let name = name.trim_start_matches('/');
        let namesize = name.len() + 1;
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            mtime.min(u32::MAX as u64) as u32,
            size,
            0, // devmajor
            0, // devminor
            0, // rdevmajor
            0, // rdevminor
            u32::try_from(namesize).map_err(|_| io::Error::other("name too long"))?,
            0, // check
        ];
        let mut h = String::with_capacity(110);
        h.push_str("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + namesize)
    }

    fn pad(&mut self, len: usize) -> io::Result<()> {
        let n = (4 - len % 4) % 4;
        self.out.write_all(&[0u8; 3][..n])
    }

    /// Directory entries for the parents of `path` not written yet.
    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut prefix = String::new();
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            prefix.push('/');
            prefix.push_str(c);
            if !self.dirs.contains(&prefix) {
                let p = prefix.clone();
                self.dir(&p, 0o755, 0)?;
            }
        }
        Ok(())
    }

    fn dir(&mut self, path: &str, mode: u32, mtime: u64) -> io::Result<()> {
        self.dirs.insert(path.to_string());
        self.header(path, S_IFDIR | (mode & 0o7777), mtime, 2, 0)
    }

    fn file(
        &mut self,
        path: &str,
        mode: u32,
        mtime: u64,
        size: u64,
        data: &mut impl io::Read,
    ) -> io::Result<()> {
        let size32 = u32::try_from(size).map_err(|_| io::Error::other("file larger than 4 GiB"))?;
        self.header(path, S_IFREG | (mode & 0o7777), mtime, 1, size32)?;
        let copied = io::copy(&mut io::Read::take(data, size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::other(format!(
                "it shrank from {size} to {copied} bytes while being read"
            )));
        }
        self.pad(size as usize)
    }

    fn finish(mut self) -> io::Result<W> {
        self.header("TRAILER!!!", 0, 0, 1, 0)?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let p =
                std::env::temp_dir().join(format!("dxvmm-inject-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// (name, mode, data) of each entry of a newc archive, trailer excluded.
    fn parse(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let start = b.len();
        loop {
            assert_eq!((start - b.len()) % 4, 0, "header not 4-aligned");
            assert_eq!(&b[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name = String::from_utf8(b[110..110 + namesize - 1].to_vec()).unwrap();
            assert_eq!(b[110 + namesize - 1], 0);
            let data_at = (110 + namesize).next_multiple_of(4);
            let data = b[data_at..data_at + size].to_vec();
            b = &b[(data_at + size).next_multiple_of(4)..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty());
                return out;
            }
            out.push((name, mode, data));
        }
    }

    fn archive(entries: &[Entry]) -> Vec<u8> {
        let mut cpio = Cpio::new(Vec::new());
        write_entries(&mut cpio, entries).unwrap();
        cpio.finish().unwrap()
    }

    #[test]
    fn guest_paths() {
        let g = |s: &str| InjectSpec::parse(s).unwrap().guest_path().unwrap();
        assert_eq!(g("./t"), "/t");
        assert_eq!(g("/usr/bin/t"), "/t");
        assert_eq!(g("t:/opt/x"), "/opt/x");
        assert_eq!(g("t:/opt/"), "/opt/t");
        assert_eq!(g("dir/:/"), "/");
        assert_eq!(g("a:b:/c//d/./e"), "/c/d/e");
        let spec = InjectSpec::parse("a:b:/c").unwrap();
        assert_eq!(spec.host, Path::new("a:b"));
    }

    #[test]
    fn bad_guest_paths_are_one_line() {
        let e = InjectSpec::parse("./t:t").unwrap_err().to_string();
        assert_eq!(e, "--inject ./t:t: the guest path 't' is not absolute");
        let e = InjectSpec::parse("./t:/a/../t").unwrap_err().to_string();
        assert!(e.contains("'..'"), "{e}");
        let e = InjectSpec::parse("./t:").unwrap_err().to_string();
        assert!(e.contains("not absolute"), "{e}");
        let s = Scratch::new("hidden");
        let f = s.0.join("f");
        fs::write(&f, b"x").unwrap();
        for g in ["/tmp/f", "/dev", "/run/x/y", "/proc"] {
            let spec = InjectSpec::parse(&format!("{}:{g}", f.display())).unwrap();
            let e = collect(&[spec]).unwrap_err().to_string();
            assert!(e.contains("would be hidden"), "{e}");
        }
        let ok = InjectSpec::parse(&format!("{}:/tmpx/f", f.display())).unwrap();
        assert!(collect(&[ok]).is_ok());
    }

    #[test]
    fn missing_host_path() {
        let spec = InjectSpec::parse("/nonexistent/dxvmm-t").unwrap();
        let e = collect(&[spec]).unwrap_err().to_string();
        assert_eq!(
            e,
            "--inject /nonexistent/dxvmm-t: no such file or directory"
        );
    }

    #[test]
    fn archive_holds_parents_modes_and_data() {
        let s = Scratch::new("tree");
        let d = s.0.join("data");
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("sub/b.txt"), b"hello").unwrap();
        fs::write(d.join("a.sh"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(d.join("a.sh"), fs::Permissions::from_mode(0o750)).unwrap();
        symlink("sub/b.txt", d.join("link")).unwrap();
        let specs = [
            InjectSpec::parse(&format!("{}:/opt/x/", d.display())).unwrap(),
            InjectSpec::parse(&format!("{}:/bin/t", d.join("a.sh").display())).unwrap(),
        ];
        let entries = collect(&specs).unwrap();
        let got = parse(&archive(&entries));
        let names: Vec<(&str, u32)> = got.iter().map(|(n, m, _)| (n.as_str(), *m)).collect();
        assert_eq!(
            names,
            [
                ("opt", S_IFDIR | 0o755),
                ("opt/x", S_IFDIR | 0o755),
                (
                    "opt/x/data",
                    S_IFDIR | (fs::metadata(&d).unwrap().permissions().mode() & 0o7777)
                ),
                ("opt/x/data/a.sh", S_IFREG | 0o750),
                (
                    "opt/x/data/link",
                    S_IFREG | (fs::metadata(d.join("link")).unwrap().permissions().mode() & 0o7777)
                ),
                (
                    "opt/x/data/sub",
                    S_IFDIR | (fs::metadata(d.join("sub")).unwrap().permissions().mode() & 0o7777)
                ),
                (
                    "opt/x/data/sub/b.txt",
                    S_IFREG
                        | (fs::metadata(d.join("sub/b.txt"))
                            .unwrap()
                            .permissions()
                            .mode()
                            & 0o7777)
                ),
                ("bin", S_IFDIR | 0o755),
                ("bin/t", S_IFREG | 0o750),
            ]
        );
        assert_eq!(got[4].2, b"hello", "the link's target's data");
        assert_eq!(got[6].2, b"hello");
        assert_eq!(got[8].2, b"#!/bin/sh\n");
    }

    #[test]
    fn links_dangling_and_cyclic_are_refused() {
        let s = Scratch::new("links");
        symlink("nowhere", s.0.join("dangling")).unwrap();
        let e = collect(&[InjectSpec::parse(&s.0.join("dangling").display().to_string()).unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("is a dangling symbolic link"), "{e}");
        fs::remove_file(s.0.join("dangling")).unwrap();
        fs::create_dir(s.0.join("d")).unwrap();
        symlink("..", s.0.join("d/up")).unwrap();
        let e = collect(&[InjectSpec::parse(&format!("{}:/x", s.0.display())).unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link back into a directory"), "{e}");
    }

    #[test]
    fn special_files_are_refused() {
        let e = collect(&[InjectSpec::parse("/dev/null:/x").unwrap()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--inject: /dev/null is a device node; only files and directories can be injected"
        );
    }

    #[test]
    fn initramfs_is_the_base_then_an_aligned_archive() {
        let s = Scratch::new("base");
        let base = s.0.join("base.cpio.gz");
        fs::write(&base, b"12345").unwrap(); // any bytes: copied as they are
        let t = s.0.join("t");
        fs::write(&t, b"data").unwrap();
        let i = Initramfs::build(
            &base,
            &[InjectSpec::parse(&t.display().to_string()).unwrap()],
        )
        .unwrap();
        let mut all = Vec::new();
        File::open(i.path()).unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(&all[..8], b"12345\0\0\0");
        let got = parse(&all[8..]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "t");
        assert_eq!(got[0].2, b"data");
        let e = Initramfs::build(&s.0.join("none"), &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("initramfs not found at"), "{e}");
    }

    #[test]
    fn host_cpio_reads_the_archive() {
        // The archive as GNU cpio sees it, where it is installed.
        let Ok(out) = std::process::Command::new("cpio").arg("--version").output() else {
            return;
        };
        if !out.status.success() {
            return;
        }
        let s = Scratch::new("gnu");
        let t = s.0.join("t");
        fs::write(&t, b"abc").unwrap();
        fs::set_permissions(&t, fs::Permissions::from_mode(0o755)).unwrap();
        let entries =
            collect(&[InjectSpec::parse(&format!("{}:/a/b/t", t.display())).unwrap()]).unwrap();
        let bytes = archive(&entries);
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 3, "{listing}");
        assert!(
            lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" a"),
            "{listing}"
        );
        assert!(
            lines[2].starts_with("-rwxr-xr-x") && lines[2].ends_with(" a/b/t"),
            "{listing}"
        );
    }
}
