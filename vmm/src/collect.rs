//! `--collect GUEST_PATH[:HOST_PATH]`: files the guest command wrote, back on
//! the host once it exits (JUnit reports, logs).
//!
//! The guest paths reach /init as `dxvmm.collect=` on the kernel command
//! line (base64 of the NUL-separated paths, as `dxvmm.cmd=`). After the
//! command exits, and before it reports `exit N`, /init sends each file on
//! the control console (hvc2), numbered by its place in that list:
//!
//! ```text
//! file I CHUNK        base64 of the next bytes of file I (busybox base64's
//!                     76-column lines: each decodes on its own)
//! file-end I SIZE [MODE]  file I is complete: SIZE bytes; MODE, its
//!                     permission bits in octal (stat -c %a), if sent
//! file-missing I      the guest has no readable regular file there
//! ```
//!
//! The guest is not trusted: a line is bounded (see guest::ControlChannel),
//! an index must be one dxvmm asked for, a chunk must be valid base64, a
//! file may not outgrow the guest's memory (where it was held), and the
//! size must match what arrived. The mode keeps only the permission bits
//! (never setuid, setgid or sticky) that the host's umask allows, as `cp`
//! does: a test binary built in the guest comes back executable. Chunks go straight to a temporary file
//! beside HOST_PATH, which is renamed over HOST_PATH only once the whole
//! file arrived: HOST_PATH is either the complete file or untouched.
//!
//! A file missing in the guest is a warning and leaves the exit status
//! alone: the command's status is the verdict, and a test that failed
//! before writing its report already fails the job. A file that could not
//! be written on the host, or arrived corrupted, is dxvmm's failure (125).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--collect {spec}: the guest path '{guest}' is not absolute")]
    NotAbsolute { spec: String, guest: String },
    #[error("--collect {spec}: the guest path '{guest}' names no file")]
    NoName { spec: String, guest: String },
    #[error("--collect {spec}: the host directory '{dir}' does not exist")]
    NoHostDir { spec: String, dir: PathBuf },
    #[error("--collect {spec}: {host} is collected twice")]
    Twice { spec: String, host: PathBuf },
    #[error("--collect {spec}: {why}")]
    Transfer { spec: String, why: String },
}

/// One `--collect` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectSpec {
    /// As the user wrote it, for messages.
    pub text: String,
    pub guest: String,
    /// `None`: the guest path's name, in the current directory.
    pub host: Option<PathBuf>,
}

impl CollectSpec {
    /// Parses `GUEST_PATH[:HOST_PATH]`, splitting at the last `:` (as
    /// `--inject` does: the optional part is the one that cannot hold a
    /// `:`), and checks the guest path. The host side is checked by
    /// [`CollectSpec::host_path`], once relative paths are settled.
    pub fn parse(text: &str) -> Result<CollectSpec, Error> {
        let (guest, host) = match text.rsplit_once(':') {
            Some((g, h)) => (g, Some(PathBuf::from(h))),
            None => (text, None),
        };
        let spec = CollectSpec {
            text: text.to_string(),
            guest: guest.to_string(),
            host,
        };
        if !guest.starts_with('/') {
            return Err(Error::NotAbsolute {
                spec: spec.text,
                guest: guest.to_string(),
            });
        }
        spec.name()?;
        Ok(spec)
    }

    /// The guest path's last component.
    fn name(&self) -> Result<&str, Error> {
        match self.guest.rsplit('/').next() {
            Some(n) if !n.is_empty() && n != "." && n != ".." => Ok(n),
            _ => Err(Error::NoName {
                spec: self.text.clone(),
                guest: self.guest.clone(),
            }),
        }
    }

    /// Where the file goes: HOST_PATH, with the guest name appended when it
    /// is a directory (or ends in `/`); the guest name alone without one.
    /// Its directory must exist: found out now rather than after the run.
    pub fn host_path(&self) -> Result<PathBuf, Error> {
        let name = self.name()?;
        let path = match &self.host {
            None => PathBuf::from(name),
            Some(h) if h.as_os_str().is_empty() => PathBuf::from(name),
            Some(h) if h.is_dir() || h.as_os_str().to_string_lossy().ends_with('/') => h.join(name),
            Some(h) => h.clone(),
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(Error::NoHostDir {
                spec: self.text.clone(),
                dir: dir.to_path_buf(),
            });
        }
        Ok(path)
    }
}

/// Checks the specs of a run and settles where each file goes.
pub fn plan(specs: &[CollectSpec]) -> Result<Vec<Wanted>, Error> {
    let mut wanted: Vec<Wanted> = Vec::with_capacity(specs.len());
    for spec in specs {
        let host = spec.host_path()?;
        if wanted.iter().any(|w| w.host == host) {
            return Err(Error::Twice {
                spec: spec.text.clone(),
                host,
            });
        }
        wanted.push(Wanted {
            spec: spec.text.clone(),
            guest: spec.guest.clone(),
            host,
        });
    }
    Ok(wanted)
}

/// One file to collect.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub spec: String,
    pub guest: String,
    pub host: PathBuf,
}

enum State {
    Waiting,
    Receiving {
        tmp: PathBuf,
        file: File,
        size: u64,
    },
    Done,
    Missing,
    /// The file cannot be delivered; the text says why.
    Failed(String),
}

/// The host's half of the transfer, fed by the control console.
pub struct Receiver {
    wanted: Vec<Wanted>,
    states: Vec<State>,
    /// The most bytes one file may have: the guest's memory.
    max_size: u64,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("wanted", &self.wanted)
            .finish()
    }
}

/// What became of the files, once the guest is gone.
pub struct Report {
    /// Files not collected without it being dxvmm's fault: one line each.
    pub warnings: Vec<String>,
    /// The first file dxvmm failed to deliver.
    pub error: Option<Error>,
}

impl Receiver {
    pub fn new(wanted: Vec<Wanted>, max_size: u64) -> Receiver {
        let states = wanted.iter().map(|_| State::Waiting).collect();
        Receiver {
            wanted,
            states,
            max_size,
        }
    }

    /// The guest paths, in the order their indices number them.
    pub fn guest_paths(&self) -> Vec<String> {
        self.wanted.iter().map(|w| w.guest.clone()).collect()
    }

    /// Handles a control line that starts with `file`; false if it is not
    /// one of the transfer's.
    pub fn line(&mut self, line: &str) -> bool {
        let mut words = line.splitn(3, ' ');
        let (kind, index, arg) = (words.next(), words.next(), words.next());
        let kind = match kind {
            Some(k @ ("file" | "file-end" | "file-missing")) => k,
            _ => return false,
        };
        let Some(i) = index
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&i| i < self.states.len())
        else {
            tracing::warn!("control line for a file dxvmm did not ask for: {line:?}");
            return true;
        };
        if let Err(why) = self.step(i, kind, arg) {
            self.fail(i, why);
        }
        true
    }

    fn step(&mut self, i: usize, kind: &str, arg: Option<&str>) -> Result<(), String> {
        match (kind, arg) {
            ("file", Some(chunk)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(chunk.trim())
                    .map_err(|e| format!("the guest sent a bad chunk ({e})"))?;
                if matches!(self.states[i], State::Waiting) {
                    self.states[i] = self.open(i)?;
                }
                let host = &self.wanted[i].host;
                let max = self.max_size;
                match &mut self.states[i] {
                    State::Receiving { file, size, .. } => {
                        *size += bytes.len() as u64;
                        if *size > max {
                            return Err(format!("the guest sent more than {max} bytes"));
                        }
                        file.write_all(&bytes)
                            .map_err(|e| format!("cannot write {}: {e}", host.display()))
                    }
                    // Already failed: the rest of the file is dropped.
                    State::Failed(_) => Ok(()),
                    _ => Err("the guest sent data for a file it had ended".into()),
                }
            }
            ("file-end", Some(rest)) => {
                let mut words = rest.split_whitespace();
                let declared = words.next().unwrap_or("");
                let declared: u64 = declared
                    .parse()
                    .map_err(|_| format!("the guest sent a bad size {declared:?}"))?;
                let mode = match words.next() {
                    None => None,
                    Some(m) => Some(
                        u32::from_str_radix(m, 8)
                            .ok()
                            .filter(|&m| m <= 0o7777)
                            .ok_or_else(|| format!("the guest sent a bad mode {m:?}"))?,
                    ),
                };
                if words.next().is_some() {
                    return Err("the guest sent a malformed line".into());
                }
                if matches!(self.states[i], State::Waiting) {
                    // An empty file has no chunks.
                    self.states[i] = self.open(i)?;
                }
                match std::mem::replace(&mut self.states[i], State::Done) {
                    State::Receiving { tmp, file, size } => {
                        let host = &self.wanted[i].host;
                        let done = if size != declared {
                            Err(format!(
                                "{size} bytes arrived of the {declared} the guest announced \
                                 (did the file change while it was sent?)"
                            ))
                        } else {
                            with_mode(&file, mode)
                                .and_then(|()| file.sync_all())
                                .and_then(|()| fs::rename(&tmp, host))
                                .map_err(|e| format!("cannot write {}: {e}", host.display()))
                        };
                        if done.is_err() {
                            let _ = fs::remove_file(&tmp);
                        }
                        done
                    }
                    failed @ State::Failed(_) => {
                        self.states[i] = failed;
                        Ok(())
                    }
                    other => {
                        self.states[i] = other;
                        Err("the guest ended the file twice".into())
                    }
                }
            }
            ("file-missing", None) => match self.states[i] {
                State::Waiting => {
                    self.states[i] = State::Missing;
                    Ok(())
                }
                _ => Err("the guest reported the file missing after sending it".into()),
            },
            _ => Err("the guest sent a malformed line".into()),
        }
    }

    /// A temporary file beside the destination, so that the rename is
    /// atomic (same filesystem) and a reader never sees half a file.
    fn open(&self, i: usize) -> Result<State, String> {
        let host = &self.wanted[i].host;
        let name = host
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = host.with_file_name(format!(".{name}.dxvmm-{}-{i}.tmp", std::process::id()));
        let file =
            File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        Ok(State::Receiving { tmp, file, size: 0 })
    }

    fn fail(&mut self, i: usize, why: String) {
        if let State::Receiving { tmp, .. } = &self.states[i] {
            let _ = fs::remove_file(tmp);
        }
        if !matches!(self.states[i], State::Failed(_)) {
            self.states[i] = State::Failed(why);
        }
    }

    /// Ends the transfer: removes what is left of unfinished files and says
    /// what became of each. `finished`: the guest reported its status (so
    /// /init had its chance to send everything).
    pub fn finish(&mut self, finished: bool) -> Report {
        let mut report = Report {
            warnings: Vec::new(),
            error: None,
        };
        for i in 0..self.states.len() {
            let spec = &self.wanted[i].spec;
            match std::mem::replace(&mut self.states[i], State::Done) {
                State::Done => {}
                State::Missing => report.warnings.push(format!(
                    "--collect {spec}: the guest has no file {}",
                    self.wanted[i].guest
                )),
                unfinished @ (State::Waiting | State::Receiving { .. }) if !finished => {
                    if let State::Receiving { tmp, .. } = &unfinished {
                        let _ = fs::remove_file(tmp);
                    }
                    report.warnings.push(format!(
                        "--collect {spec}: not collected: the guest did not finish"
                    ));
                }
                State::Waiting => {
                    report.error.get_or_insert(Error::Transfer {
                        spec: spec.clone(),
                        why: "the guest never sent it".into(),
                    });
                }
                State::Receiving { tmp, .. } => {
                    let _ = fs::remove_file(&tmp);
                    report.error.get_or_insert(Error::Transfer {
                        spec: spec.clone(),
                        why: "the guest did not finish sending it".into(),
                    });
                }
                State::Failed(why) => {
                    report.error.get_or_insert(Error::Transfer {
                        spec: spec.clone(),
                        why,
                    });
                }
            }
        }
        report
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        for s in &self.states {
            if let State::Receiving { tmp, .. } = s {
                let _ = fs::remove_file(tmp);
            }
        }
    }
}

/// Reads `dir`'s entries, for tests that check no temporary file is left.
/// Gives `file` the guest's permission bits (`mode`), less setuid, setgid
/// and sticky and less what the host's umask takes away. The umask shows in
/// the mode the file was created with (0o666 less the umask); its execute
/// bits are taken to follow its read bits.
fn with_mode(file: &File, mode: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(mode) = mode else { return Ok(()) };
    let created = file.metadata()?.permissions().mode() & 0o666;
    let masked_rw = 0o666 & !created;
    let masked = masked_rw | ((masked_rw & 0o444) >> 2);
    file.set_permissions(fs::Permissions::from_mode(mode & 0o777 & !masked))
}

#[cfg(test)]
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dxvmm-collect-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn receiver(dir: &Path, guests: &[&str]) -> Receiver {
        let specs: Vec<CollectSpec> = guests
            .iter()
            .map(|g| CollectSpec::parse(&format!("{g}:{}/", dir.display())).unwrap())
            .collect();
        Receiver::new(plan(&specs).unwrap(), 1 << 20)
    }

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn specs_parse_and_check() {
        let s = CollectSpec::parse("/tmp/j.xml").unwrap();
        assert_eq!((s.guest.as_str(), s.host.as_ref()), ("/tmp/j.xml", None));
        assert_eq!(s.host_path().unwrap(), Path::new("j.xml"));
        let s = CollectSpec::parse("/tmp/j.xml:out.xml").unwrap();
        assert_eq!(s.host_path().unwrap(), Path::new("out.xml"));
        let s = CollectSpec::parse("/tmp/j.xml:/tmp/").unwrap();
        assert_eq!(s.host_path().unwrap(), Path::new("/tmp/j.xml"));
        let s = CollectSpec::parse("/tmp/j.xml:/tmp").unwrap();
        assert_eq!(s.host_path().unwrap(), Path::new("/tmp/j.xml"));
        assert_eq!(
            CollectSpec::parse("tmp/j.xml").unwrap_err().to_string(),
            "--collect tmp/j.xml: the guest path 'tmp/j.xml' is not absolute"
        );
        assert_eq!(
            CollectSpec::parse("/tmp/").unwrap_err().to_string(),
            "--collect /tmp/: the guest path '/tmp/' names no file"
        );
        let e = CollectSpec::parse("/j.xml:/nonexistent/x/j.xml")
            .unwrap()
            .host_path()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--collect /j.xml:/nonexistent/x/j.xml: the host directory '/nonexistent/x' does not exist"
        );
        let a = CollectSpec::parse("/a/j.xml").unwrap();
        let b = CollectSpec::parse("/b/j.xml").unwrap();
        assert_eq!(
            plan(&[a, b]).unwrap_err().to_string(),
            "--collect /b/j.xml: j.xml is collected twice"
        );
    }

    #[test]
    fn modes_come_back_without_special_bits() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("modes");
        let mut r = receiver(&dir, &["/x", "/y", "/z"]);
        assert!(r.line("file 0 AAAA"));
        assert!(r.line("file-end 0 3 4755"));
        assert!(r.line("file-end 1 0 600"));
        assert!(r.line("file-end 2 0 9"));
        let report = r.finish(true);
        let mode = |n: &str| fs::metadata(dir.join(n)).unwrap().permissions().mode() & 0o7777;
        // No setuid; what the umask allows of rwxr-xr-x.
        let created = {
            let probe = dir.join("probe");
            File::create(&probe).unwrap();
            fs::metadata(&probe).unwrap().permissions().mode() & 0o666
        };
        let allowed = created | ((created & 0o444) >> 2);
        assert_eq!(mode("x"), 0o755 & allowed);
        assert_eq!(mode("y"), 0o600 & allowed);
        assert!(!dir.join("z").exists());
        assert!(report.error.unwrap().to_string().contains("bad mode"));
    }

    #[test]
    fn files_arrive_whole_or_not_at_all() {
        let dir = scratch("whole");
        let mut r = receiver(&dir, &["/a", "/b", "/c", "/d"]);
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for chunk in data.chunks(57) {
            assert!(r.line(&format!("file 0 {}", b64(chunk))));
        }
        assert!(!dir.join("a").exists(), "renamed only at the end");
        assert!(r.line("file-end 0 1000"));
        assert!(r.line("file-end 1 0"));
        assert!(r.line("file-missing 2"));
        assert!(r.line("file 3 AAAA"));
        assert!(r.line("file-end 3 2"));
        assert!(!r.line("exit 0"));
        let report = r.finish(true);
        assert_eq!(fs::read(dir.join("a")).unwrap(), data);
        assert_eq!(fs::read(dir.join("b")).unwrap(), b"");
        assert_eq!(
            report.warnings,
            [format!(
                "--collect /c:{}/: the guest has no file /c",
                dir.display()
            )]
        );
        let e = report.error.unwrap().to_string();
        assert!(e.contains("3 bytes arrived of the 2"), "{e}");
        assert_eq!(entries(&dir), ["a", "b"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn untrusted_lines_are_refused() {
        let dir = scratch("untrusted");
        let mut r = receiver(&dir, &["/a", "/b", "/c"]);
        // Indices not asked for, or not numbers: ignored.
        assert!(r.line("file 7 AAAA"));
        assert!(r.line("file -1 AAAA"));
        assert!(r.line("file x AAAA"));
        // Bad base64 fails the file, and what follows is dropped.
        assert!(r.line("file 0 AAAA"));
        assert!(r.line("file 0 !!!!"));
        assert!(r.line("file 0 AAAA"));
        assert!(r.line("file-end 0 6"));
        // Too large: more than the guest's memory.
        let big = b64(&vec![0u8; 60 * 1024]);
        for _ in 0..20 {
            r.line(&format!("file 1 {big}"));
        }
        r.line("file-end 1 1228800");
        // Data after the end.
        r.line("file-end 2 0");
        r.line("file 2 AAAA");
        let report = r.finish(true);
        let e = report.error.unwrap().to_string();
        assert!(e.starts_with("--collect /a:"), "{e}");
        assert!(e.contains("bad chunk"), "{e}");
        assert!(!e.contains('\n'));
        assert!(
            entries(&dir).iter().all(|n| !n.ends_with(".tmp")),
            "{:?}",
            entries(&dir)
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_guest_that_stops_early_leaves_nothing() {
        let dir = scratch("early");
        let mut r = receiver(&dir, &["/a", "/b"]);
        r.line("file 0 AAAA");
        let report = r.finish(false);
        assert_eq!(report.warnings.len(), 2);
        assert!(report.error.is_none());
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
        let mut r = receiver(&dir, &["/a"]);
        let report = r.finish(true);
        assert!(report
            .error
            .unwrap()
            .to_string()
            .ends_with(": the guest never sent it"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
