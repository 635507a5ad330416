//! `dxvmm run --inject` and `--config`, as a CI job uses them: a test binary
//! built on the host runs in a UML guest with /dev/dxg, its output and
//! status come back; several guests at once; bad input is one line each.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{dxvmm, processes_mentioning, text};

/// A private directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("dxvmm-inject-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, body: &str, mode: u32) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uml(dir: &Path, args: &[&str]) -> Output {
    dxvmm()
        .current_dir(dir)
        .args(["run", "--accel", "uml", "--timeout", "60"])
        .args(args)
        .output()
        .expect("spawn dxvmm")
}

fn status(out: &Output) -> Option<i32> {
    out.status.code()
}

/// A static test binary, built the way a project builds its own: it prints
/// its arguments, writes to stderr and exits with the status it is given.
fn static_test_binary(dir: &Path) -> PathBuf {
    let src = dir.join("t.rs");
    std::fs::write(
        &src,
        r#"fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("test binary: {}", args.join(" "));
    eprintln!("test binary: on stderr");
    std::process::exit(args.last().and_then(|a| a.parse().ok()).unwrap_or(0));
}
"#,
    )
    .unwrap();
    let bin = dir.join("t");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .args([
            "-O",
            "-C",
            "strip=symbols",
            "-C",
            "target-feature=+crt-static",
            "-o",
        ])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run rustc");
    assert!(out.status.success(), "rustc: {}", text(&out.stderr));
    bin
}

#[test]
fn injected_static_binary_runs_with_its_output_and_status() {
    let s = Scratch::new("binary");
    static_test_binary(&s.0);
    let out = uml(&s.0, &["--inject", "./t", "--", "/t", "a b", "42"]);
    assert_eq!(status(&out), Some(42), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "test binary: a b 42\n");
    assert_eq!(text(&out.stderr), "test binary: on stderr\n");
    let out = uml(&s.0, &["--inject", "t:/usr/bin/", "--", "t", "0"]);
    assert_eq!(status(&out), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "test binary: 0\n");
}

#[test]
fn directories_modes_and_replaced_files_arrive() {
    let s = Scratch::new("tree");
    s.file("data/run.sh", "#!/bin/sh\necho run\n", 0o750);
    s.file("data/sub/secret", "s3cret\n", 0o600);
    s.file("data/sub/plain", "plain\n", 0o644);
    std::os::unix::fs::symlink("sub/plain", s.0.join("data/link")).unwrap();
    s.file("motd", "replaced\n", 0o644);
    let script = "stat -c '%a %U %n' /opt/data /opt/data/run.sh /opt/data/sub/secret \
        /opt/data/sub/plain /opt/data/link; cat /opt/data/link /etc/motd; /opt/data/run.sh";
    let out = uml(
        &s.0,
        &[
            "--gpu",
            "none",
            "--inject",
            "data:/opt/",
            "--inject",
            "motd:/etc/motd",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(status(&out), Some(0), "stderr: {}", text(&out.stderr));
    let dir_mode = std::fs::metadata(s.0.join("data"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        text(&out.stdout),
        format!(
            "{dir_mode:o} root /opt/data\n750 root /opt/data/run.sh\n600 root /opt/data/sub/secret\n\
             644 root /opt/data/sub/plain\n644 root /opt/data/link\nplain\nreplaced\nrun\n"
        )
    );
}

#[test]
fn config_file_runs_the_same_with_flags_on_top() {
    let s = Scratch::new("config");
    s.file(
        "job/check.sh",
        "#!/bin/sh\necho \"check $* mem=$(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo)\"\nexit 5\n",
        0o755,
    );
    let cfg = s.file(
        "job/dxvmm.toml",
        "# a CI job\naccel = \"uml\"\nmemory = \"256M\"\ngpu = \"none\"\ninject = [\"check.sh:/bin/check\"]\n\
         command = [\"check\", \"from-config\"]\ntimeout = 60\nserial-log = \"console.log\"\n",
        0o644,
    );
    // Run from elsewhere: the file's paths are relative to the file.
    let out = dxvmm()
        .current_dir(&s.0)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(status(&out), Some(5), "stderr: {}", text(&out.stderr));
    let line = text(&out.stdout);
    assert!(line.starts_with("check from-config mem="), "{line}");
    let log = std::fs::read_to_string(s.0.join("job/console.log")).unwrap();
    assert!(log.contains("Linux version"), "{log}");
    let out = dxvmm()
        .current_dir(&s.0)
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--memory", "300M", "--", "check", "from-flags"])
        .output()
        .unwrap();
    assert_eq!(status(&out), Some(5), "stderr: {}", text(&out.stderr));
    let line = text(&out.stdout);
    assert!(line.starts_with("check from-flags mem="), "{line}");
    let mib: u64 = line.trim().rsplit('=').next().unwrap().parse().unwrap();
    assert!(mib > 256 && mib <= 300, "{line}");
}

#[test]
fn several_guests_at_once_share_the_gpu() {
    const GUESTS: usize = 3;
    let s = Scratch::new("parallel");
    let host = dxvmm().args(["gpus", "--json"]).output().unwrap();
    assert_eq!(status(&host), Some(0), "{}", text(&host.stderr));
    let host: serde_json::Value = serde_json::from_slice(&host.stdout).unwrap();
    assert!(
        !host.as_array().unwrap().is_empty(),
        "the host has no Vulkan adapter"
    );
    s.file(
        "job.sh",
        "#!/bin/sh\nset -e\ndxginfo --json\ndxgtest procs 4 >/dev/null\n",
        0o755,
    );
    let runtime = s.0.join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    let children: Vec<_> = (0..GUESTS)
        .map(|_| {
            dxvmm()
                .current_dir(&s.0)
                .args(["run", "--accel", "uml", "--gpu", "all", "--timeout", "120"])
                .arg("--runtime-dir")
                .arg(&runtime)
                .args(["--inject", "job.sh", "--", "/job.sh"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(status(&out), Some(0), "stderr: {}", text(&out.stderr));
        let guest: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)));
        assert_eq!(guest, host);
    }
    assert_eq!(
        processes_mentioning(&runtime.display().to_string()),
        Vec::<String>::new()
    );
    assert_eq!(
        std::fs::read_dir(&runtime).unwrap().count(),
        0,
        "runtime directory left behind"
    );
}

#[test]
fn panic_in_an_injected_test_is_reported() {
    let s = Scratch::new("panic");
    s.file("crash", "#!/bin/sh\necho c > /proc/sysrq-trigger\n", 0o755);
    let out = uml(
        &s.0,
        &["--gpu", "none", "--inject", "crash", "--", "/crash"],
    );
    assert_eq!(status(&out), Some(123), "stderr: {}", text(&out.stderr));
    let e = text(&out.stderr);
    assert!(
        e.starts_with("dxvmm: guest kernel panic:\nKernel panic - not syncing"),
        "{e}"
    );
}

// Bad input: one clear line each.

fn one_line_error(out: &Output, code: i32) -> String {
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{e}");
    assert_eq!(e.lines().count(), 1, "not one line: {e:?}");
    assert!(e.starts_with("dxvmm: "), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    e.trim_end().to_string()
}

fn bad(dir: &Path, args: &[&str]) -> Output {
    dxvmm()
        .current_dir(dir)
        .args(["run", "--accel", "uml"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn inject_path_that_does_not_exist() {
    let s = Scratch::new("missing");
    let out = bad(&s.0, &["--inject", "./nothing-here", "--", "/nothing-here"]);
    assert_eq!(
        one_line_error(&out, 125),
        "dxvmm: --inject ./nothing-here: no such file or directory"
    );
}

#[test]
fn guest_path_that_is_not_absolute() {
    let s = Scratch::new("relative");
    s.file("t", "", 0o755);
    let out = bad(&s.0, &["--inject", "./t:bin/t", "--", "t"]);
    assert_eq!(
        one_line_error(&out, 125),
        "dxvmm: --inject ./t:bin/t: the guest path 'bin/t' is not absolute"
    );
    let out = bad(&s.0, &["--inject", "t:/tmp/t", "--", "/tmp/t"]);
    assert_eq!(
        one_line_error(&out, 125),
        "dxvmm: --inject t:/tmp/t: /tmp/t would be hidden by the guest's /tmp mount"
    );
}

#[test]
fn config_with_an_unknown_key_names_key_and_line() {
    let s = Scratch::new("unknown-key");
    let cfg = s.file("run.toml", "accel = \"uml\"\n\nmemroy = \"1G\"\n", 0o644);
    let out = bad(&s.0, &["--config", cfg.to_str().unwrap()]);
    let e = one_line_error(&out, 125);
    assert!(
        e.starts_with(&format!("dxvmm: {}:3: unknown key 'memroy'", cfg.display())),
        "{e}"
    );
}

#[test]
fn config_with_a_wrong_type_names_key_and_line() {
    let s = Scratch::new("wrong-type");
    let cfg = s.file("run.toml", "cpus = 1\ntimeout = \"ten\"\n", 0o644);
    let out = bad(&s.0, &["--config", "run.toml"]);
    let e = one_line_error(&out, 125);
    assert!(
        e.starts_with("dxvmm: run.toml:2: timeout: invalid type: string \"ten\""),
        "{e}"
    );
    std::fs::write(&cfg, "command = \"ls\"\n").unwrap();
    let out = bad(&s.0, &["--config", "run.toml"]);
    let e = one_line_error(&out, 125);
    assert!(
        e.starts_with("dxvmm: run.toml:1: command: invalid type: string"),
        "{e}"
    );
    let out = bad(&s.0, &["--config", "absent.toml"]);
    let e = one_line_error(&out, 125);
    assert!(e.starts_with("dxvmm: --config absent.toml: "), "{e}");
}

#[test]
fn zero_timeout() {
    let s = Scratch::new("zero-timeout");
    s.file("run.toml", "timeout = 0\n", 0o644);
    let out = bad(&s.0, &["--config", "run.toml"]);
    assert_eq!(
        one_line_error(&out, 125),
        "dxvmm: run.toml:1: timeout: the timeout must be at least 1 second"
    );
    // On the command line it is a usage error (exit 2), clap's one line
    // followed by its pointer to --help.
    let out = bad(&s.0, &["--timeout", "0", "--", "true"]);
    assert_eq!(status(&out), Some(2));
    let e = text(&out.stderr);
    assert_eq!(
        e.lines().next().unwrap(),
        "error: invalid value '0' for '--timeout <SECS>': the timeout must be at least 1 second"
    );
}
