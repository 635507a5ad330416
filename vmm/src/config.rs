//! `dxvmm run --config FILE`: the settings of a run in a TOML file, for runs
//! that must repeat (CI). The keys are the long flags of `dxvmm run`:
//!
//! ```toml
//! accel = "uml"                  # auto | kvm | uml
//! kernel = "bzImage"             # paths are relative to this file's directory
//! initramfs = "initramfs.cpio.gz"
//! cmdline = "quiet"
//! cpus = 1
//! memory = "1G"                  # or a number of MiB: 1024
//! host-cpu = "auto"              # auto | none | a CPU number (user-mode engine)
//! gpu = "all"                    # all | none | indices, LUIDs, name fragments
//! inject = ["target/release/mytests:/bin/mytests", "testdata:/data"]
//! command = ["mytests", "--data", "/data", "--junit", "/tmp/junit.xml"]
//! collect = ["/tmp/junit.xml:junit.xml"]
//! timeout = 60
//! serial-log = "console.log"
//! runtime-dir = "/run/user/1000"
//! verbose = false
//! ```
//!
//! A flag given on the command line overrides the file's value; `--inject`
//! adds to the file's list (later entries win on the same guest path), so
//! does `--collect`, and a command after `--` replaces the file's. An unknown key or a value of the
//! wrong type is one line naming the file, the line and the key.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use device_dxg::GpuSelection;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::affinity::HostCpu;
use crate::cli::{Accel, RunArgs};
use crate::collect::CollectSpec;
use crate::inject::InjectSpec;
use crate::size::MemorySize;

const DEFAULT_MEMORY: &str = "512M";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--config {0}: {1}")]
    Read(PathBuf, io::Error),
    #[error("{file}:{line}: {message}")]
    At {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error(transparent)]
    Inject(#[from] crate::inject::Error),
    #[error(transparent)]
    Collect(#[from] crate::collect::Error),
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigFile {
    #[serde(default, deserialize_with = "accel")]
    accel: Option<Accel>,
    kernel: Option<PathBuf>,
    initramfs: Option<PathBuf>,
    cmdline: Option<String>,
    #[serde(default, deserialize_with = "cpus")]
    cpus: Option<u8>,
    #[serde(default, deserialize_with = "memory")]
    memory: Option<MemorySize>,
    #[serde(default, deserialize_with = "host_cpu")]
    host_cpu: Option<HostCpu>,
    #[serde(default, deserialize_with = "gpu")]
    gpu: Option<GpuSelection>,
    #[serde(default, deserialize_with = "inject")]
    inject: Vec<InjectSpec>,
    command: Option<Vec<String>>,
    #[serde(default, deserialize_with = "collect")]
    collect: Vec<CollectSpec>,
    #[serde(default, deserialize_with = "timeout")]
    timeout: Option<u64>,
    serial_log: Option<PathBuf>,
    runtime_dir: Option<PathBuf>,
    verbose: Option<bool>,
}

/// The keys, for the message about an unknown one.
const KEYS: &str = "accel, kernel, initramfs, cmdline, cpus, memory, host-cpu, gpu, inject, \
    command, collect, timeout, serial-log, runtime-dir, verbose";

fn accel<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Accel>, D::Error> {
    let s = String::deserialize(d)?;
    Accel::from_str(&s, false)
        .map(Some)
        .map_err(|_| de::Error::custom(format!("'{s}' is not an engine (auto, kvm or uml)")))
}

fn cpus<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    match u8::deserialize(d)? {
        0 => Err(de::Error::custom("at least 1 vCPU")),
        n => Ok(Some(n)),
    }
}

fn host_cpu<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HostCpu>, D::Error> {
    // "auto", "none", or a number.
    let v = toml::Value::deserialize(d)?;
    let s = match &v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        _ => return Err(de::Error::custom("auto, none or a CPU number")),
    };
    s.parse().map(Some).map_err(de::Error::custom)
}

fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = u64::deserialize(d)?;
    crate::cli::parse_timeout(&v.to_string())
        .map(Some)
        .map_err(de::Error::custom)
}

fn gpu<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GpuSelection>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(de::Error::custom)
}

fn inject<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<InjectSpec>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| InjectSpec::parse(s))
        .collect::<Result<_, _>>()
        .map_err(|e| de::Error::custom(e.to_string().trim_start_matches("--inject ").to_string()))
}

fn collect<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<CollectSpec>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| CollectSpec::parse(s))
        .collect::<Result<_, _>>()
        .map_err(|e| de::Error::custom(e.to_string().trim_start_matches("--collect ").to_string()))
}

/// A size as `memory = "1G"` or `memory = 1024` (MiB).
fn memory<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MemorySize>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = MemorySize;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a size such as \"512M\" or \"2G\", or a number of MiB")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<MemorySize, E> {
            s.parse().map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<MemorySize, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("{v} is not a memory size")))
                .and_then(|v| self.visit_u64(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<MemorySize, E> {
            v.to_string().parse().map_err(E::custom)
        }
    }
    d.deserialize_any(V).map(Some)
}

/// Everything `dxvmm run` needs, the file's values under the flags'.
#[derive(Debug)]
pub struct Settings {
    pub accel: Accel,
    pub kernel: Option<PathBuf>,
    pub initramfs: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub cpus: u8,
    pub memory: MemorySize,
    pub host_cpu: HostCpu,
    pub timeout: Option<u64>,
    pub serial_log: Option<PathBuf>,
    pub runtime_dir: Option<PathBuf>,
    pub gpu: Option<GpuSelection>,
    pub verbose: bool,
    pub inject: Vec<InjectSpec>,
    pub collect: Vec<CollectSpec>,
    pub command: Vec<String>,
}

/// Reads `--config` (if given) and lays the flags over it.
pub fn resolve(args: RunArgs) -> Result<Settings, Error> {
    let file = match &args.config {
        Some(path) => load(path)?,
        None => ConfigFile::default(),
    };
    let mut inject = file.inject;
    for s in &args.inject {
        inject.push(InjectSpec::parse(s)?);
    }
    let mut collect = file.collect;
    for s in &args.collect {
        collect.push(CollectSpec::parse(s)?);
    }
    let default_memory = DEFAULT_MEMORY
        .parse()
        .expect("the default memory size parses");
    Ok(Settings {
        accel: args.accel.or(file.accel).unwrap_or(Accel::Auto),
        kernel: args.kernel.or(file.kernel),
        initramfs: args.initramfs.or(file.initramfs),
        cmdline: args.cmdline.or(file.cmdline),
        cpus: args.cpus.or(file.cpus).unwrap_or(1),
        memory: args.memory.or(file.memory).unwrap_or(default_memory),
        host_cpu: args.host_cpu.or(file.host_cpu).unwrap_or_default(),
        timeout: args.timeout.or(file.timeout),
        serial_log: args.serial_log.or(file.serial_log),
        runtime_dir: args.runtime_dir.or(file.runtime_dir),
        gpu: args.gpu.or(file.gpu),
        verbose: args.verbose || file.verbose.unwrap_or(false),
        inject,
        collect,
        command: if args.command.is_empty() {
            file.command.unwrap_or_default()
        } else {
            args.command
        },
    })
}

fn load(path: &Path) -> Result<ConfigFile, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Read(path.to_path_buf(), e))?;
    let mut file = parse(&text, &path.display().to_string())?;
    // Relative paths are relative to the file, wherever dxvmm runs.
    let dir = path.parent().unwrap_or(Path::new(""));
    let rel = |p: &mut Option<PathBuf>| {
        if let Some(p) = p {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    };
    rel(&mut file.kernel);
    rel(&mut file.initramfs);
    rel(&mut file.serial_log);
    rel(&mut file.runtime_dir);
    for spec in &mut file.inject {
        if spec.host.is_relative() {
            spec.host = dir.join(&spec.host);
        }
    }
    // A collected file without a host path lands beside the file too.
    for spec in &mut file.collect {
        let host = spec.host.take().unwrap_or_default();
        if host.is_relative() {
            spec.host = Some(dir.join(host));
        } else {
            spec.host = Some(host);
        }
    }
    Ok(file)
}

fn parse(text: &str, name: &str) -> Result<ConfigFile, Error> {
    toml::from_str(text).map_err(|e| describe(text, name, e.message(), e.span()))
}

/// One line from a TOML error: the file, the line, the key and what is wrong.
fn describe(text: &str, name: &str, message: &str, span: Option<Range<usize>>) -> Error {
    let message = message.trim().replace('\n', "; ");
    let message = match message.strip_prefix("unknown field `") {
        Some(rest) => {
            let key = rest.split('`').next().unwrap_or(rest);
            format!("unknown key '{key}' (the keys: {KEYS})")
        }
        None => message,
    };
    let Some(span) = span else {
        return Error::File {
            file: name.to_string(),
            message,
        };
    };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let line_text = text[start..].lines().next().unwrap_or("");
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let whole_line = text[line_start..].lines().next().unwrap_or(line_text);
    // The key of a `key = value` line whose value is at fault.
    let key = whole_line
        .split_once('=')
        .filter(|(k, _)| line_start + k.len() <= start)
        .map(|(k, _)| k.trim().trim_matches(['"', '\'']).to_string())
        .filter(|k| !k.is_empty() && !message.contains(&format!("'{k}'")));
    let message = match key {
        Some(k) => format!("{k}: {message}"),
        None => message,
    };
    Error::At {
        file: name.to_string(),
        line,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn err(text: &str) -> String {
        parse(text, "run.toml").unwrap_err().to_string()
    }

    fn args(argv: &[&str]) -> RunArgs {
        let mut all = vec!["dxvmm", "run"];
        all.extend_from_slice(argv);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Run(r) => r,
            _ => panic!("not run"),
        }
    }

    #[test]
    fn every_key_parses() {
        let f = parse(
            r#"
accel = "uml"
kernel = "k"
initramfs = "i"
cmdline = "quiet"
cpus = 2
memory = "1G"
host-cpu = 3
gpu = "none"
inject = ["t", "d:/opt/d"]
command = ["/t", "-v"]
collect = ["/tmp/j.xml:out/"]
timeout = 30
serial-log = "log"
runtime-dir = "/run"
verbose = true
"#,
            "run.toml",
        )
        .unwrap();
        assert_eq!(f.accel, Some(Accel::Uml));
        assert_eq!(f.cpus, Some(2));
        assert_eq!(f.memory.unwrap().mib(), 1024);
        assert_eq!(f.host_cpu, Some(HostCpu::Cpu(3)));
        assert_eq!(f.gpu, Some(GpuSelection::None));
        assert_eq!(f.inject[1].guest.as_deref(), Some("/opt/d"));
        assert_eq!(f.command.unwrap(), ["/t", "-v"]);
        assert_eq!(f.collect[0].guest, "/tmp/j.xml");
        assert_eq!(f.timeout, Some(30));
        assert_eq!(f.verbose, Some(true));
        assert_eq!(
            parse("memory = 256", "x").unwrap().memory.unwrap().mib(),
            256
        );
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err("cpus = 1\n\nmemroy = \"1G\"\n");
        assert!(
            e.starts_with("run.toml:3: unknown key 'memroy' (the keys: accel,"),
            "{e}"
        );
        let e = err("[run]\ncpus = 1\n");
        assert!(e.starts_with("run.toml:1: unknown key 'run'"), "{e}");
    }

    #[test]
    fn host_cpu_takes_a_word_or_a_number() {
        assert_eq!(
            parse("host-cpu = \"none\"", "x").unwrap().host_cpu,
            Some(HostCpu::Free)
        );
        let e = err("host-cpu = \"fast\"\n");
        assert!(e.starts_with("run.toml:1: host-cpu: "), "{e}");
        let e = err("host-cpu = -1\n");
        assert!(e.starts_with("run.toml:1: host-cpu: "), "{e}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let e = err("accel = \"uml\"\ncpus = \"two\"\n");
        assert!(e.starts_with("run.toml:2: cpus: "), "{e}");
        assert!(e.contains("string"), "{e}");
        let e = err("command = \"ls -l\"\n");
        assert!(e.starts_with("run.toml:1: command: "), "{e}");
        let e = err("memory = \"lots\"\n");
        assert!(
            e.starts_with("run.toml:1: memory: 'lots' is not a memory size"),
            "{e}"
        );
        let e = err("accel = \"xen\"\n");
        assert_eq!(
            e,
            "run.toml:1: accel: 'xen' is not an engine (auto, kvm or uml)"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn bad_values_are_one_line() {
        let e = err("\ntimeout = 0\n");
        assert_eq!(
            e,
            "run.toml:2: timeout: the timeout must be at least 1 second"
        );
        let e = err("cpus = 0\n");
        assert_eq!(e, "run.toml:1: cpus: at least 1 vCPU");
        let e = err("inject = [\"t:rel\"]\n");
        assert_eq!(
            e,
            "run.toml:1: inject: t:rel: the guest path 'rel' is not absolute"
        );
        let e = err("collect = [\"j.xml\"]\n");
        assert_eq!(
            e,
            "run.toml:1: collect: j.xml: the guest path 'j.xml' is not absolute"
        );
        let e = err("cpus = \n");
        assert!(e.starts_with("run.toml:1: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("dxvmm-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.toml");
        std::fs::write(
            &path,
            "memory = \"1G\"\ncpus = 2\ninject = [\"t\"]\ncommand = [\"/t\"]\ntimeout = 9\nkernel = \"/k\"\n",
        )
        .unwrap();
        let cfg = path.to_str().unwrap();
        let s = resolve(args(&["--config", cfg])).unwrap();
        assert_eq!((s.memory.mib(), s.cpus, s.timeout), (1024, 2, Some(9)));
        assert_eq!(s.command, ["/t"]);
        assert_eq!(s.inject[0].host, dir.join("t"), "relative to the file");
        assert_eq!(s.kernel.as_deref(), Some(Path::new("/k")));
        assert_eq!(s.accel, Accel::Auto);
        let s = resolve(args(&[
            "--config",
            cfg,
            "--memory",
            "256",
            "--timeout",
            "5",
            "--inject",
            "u:/u",
            "--accel",
            "uml",
            "--",
            "/u",
        ]))
        .unwrap();
        assert_eq!((s.memory.mib(), s.cpus, s.timeout), (256, 2, Some(5)));
        assert_eq!(s.command, ["/u"]);
        assert_eq!(s.inject.len(), 2);
        assert_eq!(s.accel, Accel::Uml);
        let s = resolve(args(&[])).unwrap();
        assert_eq!((s.memory.mib(), s.cpus, s.timeout), (512, 1, None));
        let e = resolve(args(&["--config", "/nonexistent/run.toml"])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--config /nonexistent/run.toml: "),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
