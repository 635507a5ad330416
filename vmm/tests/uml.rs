//! Integration tests of the user-mode engine: each boots a real UML guest
//! (images/build.sh's kernel and initramfs) through `dxvmm run --accel uml`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;
use common::{dxvmm, processes_mentioning, text};

fn images_present() {
    let cache = std::env::var_os("DXVMM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/dxvmm"));
    for f in ["images/uml/linux", "images/initramfs.cpio.gz"] {
        assert!(
            cache.join(f).exists(),
            "{} missing: run images/build.sh first (ci/test.sh does)",
            cache.join(f).display()
        );
    }
}

/// A private parent for the runtime directory, so a test can check that
/// nothing is left in it.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dxvmm-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_guest(args: &[&str]) -> Output {
    images_present();
    dxvmm()
        .args(["run", "--accel", "uml", "--timeout", "60"])
        .args(args)
        .output()
        .expect("spawn dxvmm")
}

/// Waits (up to 10 s) for the UML kernel of a guest whose runtime
/// directory is under `parent` (its arguments name the device sockets
/// there); its pid.
fn uml_kernel_pid(parent: &Path) -> Option<String> {
    let needle = parent.to_str().unwrap();
    for _ in 0..200 {
        if let Some(p) = processes_mentioning(needle)
            .iter()
            .find(|p| p.contains("virtio_uml.device="))
        {
            return p.split(':').next().map(str::to_string);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn command_output_and_exit_status() {
    let out = run_guest(&[
        "--",
        "sh",
        "-c",
        "echo hello from the guest; echo oops >&2; exit 7",
    ]);
    assert_eq!(text(&out.stdout), "hello from the guest\n");
    assert_eq!(text(&out.stderr), "oops\n");
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn arguments_keep_spaces_and_quotes() {
    let out = run_guest(&["--", "printf", "[%s]\\n", "a b", "'q'", ""]);
    assert_eq!(text(&out.stdout), "[a b]\n['q']\n[]\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn guest_is_a_real_linux_with_virtio_consoles() {
    let out = run_guest(&[
        "--",
        "sh",
        "-c",
        "uname -sr; cat /sys/bus/virtio/devices/*/device; ls /dev/hvc0 /dev/hvc1 /dev/hvc2",
    ]);
    let s = text(&out.stdout);
    assert!(s.starts_with("Linux 6.1."), "{s}");
    // Three virtio-console devices (id 3) served over vhost-user.
    assert_eq!(s.matches("0x0003").count(), 3, "{s}");
    assert!(s.contains("/dev/hvc2"), "{s}");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn host_stdin_reaches_the_guest() {
    images_present();
    let mut child = dxvmm()
        .args([
            "run",
            "--accel",
            "uml",
            "--timeout",
            "60",
            "--",
            "head",
            "-c",
            "11",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "from stdin\n");
    assert_eq!(out.status.code(), Some(0));
}

/// A file or pipe on the host's stdin ends in the guest too: a command that
/// reads to the end finishes, and every byte (0xff, the framing's escape,
/// included) arrives once.
#[test]
fn piped_stdin_ends_and_arrives_whole() {
    images_present();
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .chain([0xff, 0xff, 0x00, 0xff])
        .collect();
    let mut child = dxvmm()
        .args(["run", "--accel", "uml", "--timeout", "60", "--"])
        .args(["sh", "-c", "wc -c; echo end"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert_eq!(text(&out.stdout), "200004\nend\n");
    assert_eq!(out.status.code(), Some(0));

    // The same bytes back out (od shows them), through a file this time.
    let path = std::env::temp_dir().join(format!("dxvmm-stdin-{}", std::process::id()));
    std::fs::write(&path, [b'a', 0xff, b'b', 0xff, 0xff, 0x00, b'\n']).unwrap();
    let out = dxvmm()
        .args(["run", "--accel", "uml", "--timeout", "60", "--"])
        .args(["od", "-An", "-tx1"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        text(&out.stdout).split_whitespace().collect::<Vec<_>>(),
        ["61", "ff", "62", "ff", "ff", "00", "0a"]
    );

    // Nothing on stdin (/dev/null): the command sees the end at once.
    let out = run_guest(&["--", "sh", "-c", "cat; echo done"]);
    assert_eq!(text(&out.stdout), "done\n");
}

#[test]
fn large_output_arrives_whole() {
    let out = run_guest(&["--", "sh", "-c", "seq 1 20000"]);
    let s = text(&out.stdout);
    assert_eq!(s.lines().count(), 20000);
    assert_eq!(s.lines().last(), Some("20000"));
}

#[test]
fn guest_panic_is_reported() {
    let out = run_guest(&["--", "sh", "-c", "echo c > /proc/sysrq-trigger"]);
    assert_eq!(out.status.code(), Some(123));
    let e = text(&out.stderr);
    assert!(e.contains("guest kernel panic"), "{e}");
    assert!(
        e.contains("Kernel panic - not syncing: sysrq triggered crash"),
        "{e}"
    );
}

#[test]
fn serial_log_keeps_the_kernel_console() {
    let dir = scratch("serial");
    let log = dir.join("console.log");
    let out = run_guest(&["--serial-log", log.to_str().unwrap(), "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    let console = std::fs::read_to_string(&log).unwrap();
    assert!(console.contains("Linux version 6.1"), "{console}");
    assert!(console.contains("virtio_uml.device="), "{console}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn timeout_kills_a_hung_guest() {
    images_present();
    let out = dxvmm()
        .args([
            "run",
            "--accel",
            "uml",
            "--timeout",
            "2",
            "--",
            "sleep",
            "600",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124));
    assert!(text(&out.stderr).contains("did not finish within 2 s"));
}

#[test]
fn guest_killed_from_outside_leaves_nothing_behind() {
    images_present();
    let parent = scratch("killed");
    let child = dxvmm()
        .args(["run", "--accel", "uml", "--timeout", "120", "--runtime-dir"])
        .arg(&parent)
        .args(["--", "sleep", "600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let needle = parent.to_str().unwrap().to_string();
    let uml_pid: i32 = uml_kernel_pid(&parent)
        .expect("the UML guest never started")
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(Command::new("kill")
        .args(["-9", &uml_pid.to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(122), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("killed by signal 9"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(processes_mentioning(&needle), Vec::<String>::new());
    assert!(
        is_empty_dir(&parent),
        "sockets left in {}",
        parent.display()
    );
    std::fs::remove_dir_all(&parent).unwrap();
}

#[test]
fn dxvmm_killed_takes_its_guest_along() {
    images_present();
    let parent = scratch("sigkill");
    let mut child = dxvmm()
        .args(["run", "--accel", "uml", "--timeout", "120", "--runtime-dir"])
        .arg(&parent)
        .args(["--", "sleep", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let needle = parent.to_str().unwrap().to_string();
    for _ in 0..200 {
        if !processes_mentioning(&needle).is_empty() && is_empty_dir(&parent) {
            break; // booted and connected: the sockets are already gone
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut left = processes_mentioning(&needle);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = processes_mentioning(&needle);
    }
    assert_eq!(left, Vec::<String>::new());
    assert!(is_empty_dir(&parent));
    std::fs::remove_dir_all(&parent).unwrap();
}

#[test]
fn sigterm_tears_the_guest_down() {
    images_present();
    let parent = scratch("sigterm");
    let child = dxvmm()
        .args(["run", "--accel", "uml", "--timeout", "120", "--runtime-dir"])
        .arg(&parent)
        .args(["--", "sleep", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let needle = parent.to_str().unwrap().to_string();
    for _ in 0..200 {
        if processes_mentioning(&needle)
            .iter()
            .any(|p| p.contains("virtio_uml"))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert_eq!(processes_mentioning(&needle), Vec::<String>::new());
    assert!(is_empty_dir(&parent));
    std::fs::remove_dir_all(&parent).unwrap();
}

// Bad input: one clear line and a non-zero exit each.

fn one_line_error(out: &Output) -> String {
    let e = text(&out.stderr);
    assert_eq!(e.lines().count(), 1, "not one line: {e:?}");
    assert!(e.starts_with("dxvmm: "), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

#[test]
fn missing_uml_kernel() {
    let out = dxvmm()
        .args([
            "run",
            "--accel",
            "uml",
            "--kernel",
            "/nonexistent/linux",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(one_line_error(&out).contains("UML kernel not found at /nonexistent/linux"));
}

#[test]
fn missing_initramfs() {
    images_present();
    let out = dxvmm()
        .args([
            "run",
            "--accel",
            "uml",
            "--initramfs",
            "/nonexistent/initrd",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(one_line_error(&out).contains("initramfs not found at /nonexistent/initrd"));
}

#[test]
fn runtime_dir_that_is_not_writable() {
    images_present();
    let dir = scratch("notdir");
    let file = dir.join("a-file");
    std::fs::write(&file, b"").unwrap();
    // A regular file cannot hold the socket directory (and /proc refuses
    // new entries even to root, whom permission bits do not stop).
    for parent in [file.to_str().unwrap(), "/proc/self"] {
        let out = dxvmm()
            .args([
                "run",
                "--accel",
                "uml",
                "--runtime-dir",
                parent,
                "--",
                "true",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125));
        assert!(one_line_error(&out).contains("cannot create a runtime directory in"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn guest_that_dies_before_connecting() {
    images_present();
    let out = dxvmm()
        .args([
            "run",
            "--accel",
            "uml",
            "--kernel",
            "/bin/false",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(one_line_error(&out)
        .contains("the guest exited before connecting its devices (exit status 1)"));
}

/// The CPUs a process may run on, as /proc prints them ("0-3,6").
fn cpus_allowed(pid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Starts a guest that sleeps with `host_cpu`, returns the UML kernel's
/// allowed CPUs once it is up, and lets the guest finish.
fn guest_cpus_allowed(name: &str, host_cpu: &str) -> String {
    images_present();
    let parent = scratch(name);
    let child = dxvmm()
        .args([
            "run",
            "--accel",
            "uml",
            "--timeout",
            "60",
            "--host-cpu",
            host_cpu,
        ])
        .arg("--runtime-dir")
        .arg(&parent)
        .args(["--", "sleep", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let allowed = uml_kernel_pid(&parent).map(|pid| cpus_allowed(&pid));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::remove_dir_all(&parent).unwrap();
    allowed.expect("the UML guest never started")
}

#[test]
fn host_cpu_pins_the_guest() {
    let ours = cpus_allowed("self");
    let first: String = ours.chars().take_while(|c| c.is_ascii_digit()).collect();
    assert_eq!(guest_cpus_allowed("pin-first", &first), first);
    assert_eq!(guest_cpus_allowed("pin-none", "none"), ours);
    // auto: one CPU of ours (or, with only one, that one).
    let auto = guest_cpus_allowed("pin-auto", "auto");
    assert!(auto.parse::<usize>().is_ok() || auto == ours, "{auto}");
}

#[test]
fn host_cpu_outside_the_allowed_set_is_one_line() {
    let out = dxvmm()
        .args(["run", "--accel", "uml", "--host-cpu", "1023", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(one_line_error(&out).contains("--host-cpu 1023: not a CPU dxvmm may run on"));
    let out = dxvmm()
        .args(["run", "--host-cpu", "first", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("'first' is not auto, none or a CPU number"));
}

#[test]
fn bad_memory_sizes() {
    for (size, msg) in [("16M", "too small"), ("100000G", "more than this host has")] {
        let out = dxvmm()
            .args(["run", "--accel", "uml", "--memory", size, "--", "true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125));
        assert!(one_line_error(&out).contains(msg));
    }
    let out = dxvmm()
        .args(["run", "--memory", "12Q", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("'12Q' is not a memory size"));
}

#[test]
fn help_explains_every_flag() {
    let out = dxvmm().args(["run", "--help"]).output().unwrap();
    assert!(out.status.success());
    let h = text(&out.stdout);
    for flag in [
        "--accel",
        "--kernel",
        "--initramfs",
        "--cmdline",
        "--cpus",
        "--memory",
        "--host-cpu",
        "--timeout",
        "--serial-log",
        "--runtime-dir",
        "Exit status",
    ] {
        assert!(h.contains(flag), "--help lacks {flag}");
    }
}

/// A pseudo-terminal of `cols` x `rows`: (master, slave).
fn pty(cols: u16, rows: u16) -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors; the name is not asked for and
    // the termios is the default; `ws` is a valid winsize.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(r, 0, "openpty");
    // SAFETY: both descriptors were just opened and are ours alone.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    }
}

/// Reads `master` until `want` has appeared (or the other side is gone).
fn read_until(master: &mut std::fs::File, seen: &mut String, want: &str) {
    use std::io::Read;
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
}

/// On a host terminal, the guest command's terminal has the host's size,
/// and a resize of the host terminal reaches the command as SIGWINCH with
/// the new size.
#[test]
fn guest_terminal_follows_the_host_size() {
    use std::os::unix::process::CommandExt;
    images_present();
    let (mut master, slave) = pty(111, 33);
    let mut cmd = dxvmm();
    cmd.args(["run", "--accel", "uml", "--timeout", "60", "--"])
        .args([
            "sh",
            "-c",
            "stty size; trap 'stty size; exit 0' WINCH; echo waiting; \
             while :; do sleep 0.1; done",
        ])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: between fork and exec only setsid and ioctl, both
    // async-signal-safe: the pty becomes dxvmm's controlling terminal, so a
    // resize sends it SIGWINCH as a terminal would.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    // Only dxvmm may hold the slave now, so a read sees its end.
    drop(cmd);
    drop(slave);
    let mut seen = String::new();
    read_until(&mut master, &mut seen, "waiting");
    assert!(seen.contains("33 111"), "{seen}");
    let ws = libc::winsize {
        ws_row: 44,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from `ws`; the fd is our master.
    let r = unsafe {
        use std::os::fd::AsRawFd;
        libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws)
    };
    assert_eq!(r, 0);
    read_until(&mut master, &mut seen, "44 120");
    let status = child.wait().unwrap();
    assert!(seen.contains("44 120"), "{seen}");
    assert_eq!(status.code(), Some(0), "{seen}");
}
