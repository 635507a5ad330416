//! The KVM engine against small test guests on this host's real KVM: each
//! guest prints on COM1, drives dxvmm's virtio-mmio devices (the consoles,
//! the dxg device) through their queues, and ends through the same paths a
//! Linux guest uses.

mod kvm_guest_code;

use std::path::Path;
use std::process::{Command, Output};

use kvm_guest_code::dxg;
use kvm_guest_code::{scratch, write_guest, Asm, VIRTIO_BASE};

fn dxvmm(kernel: &Path, initrd: &Path, log: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dxvmm"))
        .args([
            "run",
            "--accel",
            "kvm",
            "--memory",
            "128M",
            "--timeout",
            "30",
        ])
        .arg("--kernel")
        .arg(kernel)
        .arg("--initramfs")
        .arg(initrd)
        .arg("--serial-log")
        .arg(log)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run dxvmm")
}

macro_rules! require_kvm {
    () => {
        if !kvm_guest_code::kvm_usable() {
            eprintln!("skipped: /dev/kvm is not usable here");
            return;
        }
    };
}

fn describe(out: &Output, log: &Path) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}\nserial: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

/// The whole path of a guest command: output on hvc0, status on hvc2,
/// power-off through ACPI.
fn console_guest(status: u8) -> Asm {
    let mut a = Asm::new();
    let fail = a.label();
    a.print("dxvmm test guest: up\n");
    a.virtio_console_init(0, fail);
    a.virtio_console_init(2, fail);
    a.print("dxvmm test guest: consoles ready\n");
    a.virtio_console_send(0, 1, b"hello from a KVM test guest\n", fail);
    a.virtio_console_send(0, 2, b"second buffer\n", fail);
    a.virtio_console_send(2, 1, format!("exit {status}\n").as_bytes(), fail);
    a.print("dxvmm test guest: powering off\n");
    a.poweroff();
    a.bind(fail);
    a.print("dxvmm test guest: FAIL\n");
    a.poweroff();
    a
}

#[test]
fn guest_drives_virtio_consoles_and_reports_its_status() {
    require_kvm!();
    let dir = scratch("kvm-console");
    let (kernel, initrd) = write_guest(&dir, "console", console_guest(7));
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["--", "true"]);
    let serial = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out, &log));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from a KVM test guest\nsecond buffer\n"
    );
    assert!(serial.contains("consoles ready"), "{serial}");
    assert!(serial.contains("powering off"), "{serial}");
    assert!(!serial.contains("FAIL"), "{serial}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn status_zero_with_several_vcpus() {
    require_kvm!();
    let dir = scratch("kvm-cpus");
    let (kernel, initrd) = write_guest(&dir, "console", console_guest(0));
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["--cpus", "2", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out, &log));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn poweroff_without_a_command_is_success() {
    require_kvm!();
    let dir = scratch("kvm-poweroff");
    let mut a = Asm::new();
    a.print("bye\n");
    a.poweroff();
    let (kernel, initrd) = write_guest(&dir, "poweroff", a);
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out, &log));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "bye\n");
    // With a command, a power-off without a status is a lost guest.
    let out = dxvmm(&kernel, &initrd, &log, &["--", "true"]);
    assert_eq!(out.status.code(), Some(122), "{}", describe(&out, &log));
    assert!(String::from_utf8_lossy(&out.stderr).contains("powered off without reporting a status"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn acpi_reset_ends_the_run() {
    require_kvm!();
    let dir = scratch("kvm-reset");
    let mut a = Asm::new();
    a.mov_dx(0x604);
    a.mov_al(1);
    a.out_dx_al();
    a.hlt();
    let (kernel, initrd) = write_guest(&dir, "reset", a);
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["--", "true"]);
    assert_eq!(out.status.code(), Some(122), "{}", describe(&out, &log));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ACPI reset register"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn triple_fault_ends_the_run() {
    require_kvm!();
    let dir = scratch("kvm-triple");
    let mut a = Asm::new();
    a.print("about to fault\n");
    a.ud2();
    let (kernel, initrd) = write_guest(&dir, "triple", a);
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["--", "true"]);
    assert_eq!(out.status.code(), Some(122), "{}", describe(&out, &log));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("triple fault"), "{err}");
    assert!(err.contains("about to fault"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn panic_on_the_console_is_reported() {
    require_kvm!();
    let dir = scratch("kvm-panic");
    let mut a = Asm::new();
    a.print("Kernel panic - not syncing: test guest gives up\n");
    a.print("---[ end Kernel panic - not syncing: test guest gives up ]---\n");
    a.mov_dx(0x604);
    a.mov_al(1);
    a.out_dx_al();
    a.hlt();
    let (kernel, initrd) = write_guest(&dir, "panic", a);
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["--", "true"]);
    assert_eq!(out.status.code(), Some(123), "{}", describe(&out, &log));
    assert!(String::from_utf8_lossy(&out.stderr).contains("test guest gives up"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn timeout_stops_a_spinning_guest() {
    require_kvm!();
    let dir = scratch("kvm-timeout");
    let mut a = Asm::new();
    let top = a.label();
    a.bind(top);
    a.pause();
    a.jmp(top);
    let (kernel, initrd) = write_guest(&dir, "spin", a);
    let log = dir.join("serial.log");
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_dxvmm"))
        .args(["run", "--accel", "kvm", "--memory", "64M", "--timeout", "1"])
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initramfs")
        .arg(&initrd)
        .args(["--", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124), "{}", describe(&out, &log));
    assert!(started.elapsed().as_secs() < 10);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A flag word the guest's interrupt handler or second CPU sets.
const FLAG: u64 = 0x3000;

#[test]
fn virtio_interrupt_reaches_the_guest_through_irqfd() {
    require_kvm!();
    let dir = scratch("kvm-irq");
    let mut a = Asm::new();
    let start = a.label();
    let fail = a.label();
    a.jmp(start);
    // Vector 0x40: set the flag, end the interrupt at the LAPIC, return.
    let handler = a.here();
    a.save();
    a.write32(FLAG, 1);
    a.write32(0xfee0_00b0, 0); // LAPIC EOI
    a.restore();
    a.iretq();
    a.bind(start);
    // Mask the 8259s: the virtio GSI reaches the PIC too, unprogrammed.
    a.outb(0x21, 0xff);
    a.outb(0xa1, 0xff);
    // IDT at 0x11000 with one 64-bit interrupt gate, for vector 0x40.
    let idt = 0x1_1000u64;
    let gate = idt + 0x40 * 16;
    let mut g = Vec::new();
    g.extend_from_slice(&(handler as u16).to_le_bytes());
    g.extend_from_slice(&8u16.to_le_bytes()); // code selector
    g.extend_from_slice(&[0, 0x8e]); // no IST; present, DPL 0, interrupt gate
    g.extend_from_slice(&((handler >> 16) as u16).to_le_bytes());
    g.extend_from_slice(&((handler >> 32) as u32).to_le_bytes());
    g.extend_from_slice(&0u32.to_le_bytes());
    a.poke(gate, &g);
    let idtr = 0x1_2000u64;
    let mut d = (0x41u16 * 16 - 1).to_le_bytes().to_vec();
    d.extend_from_slice(&idt.to_le_bytes());
    a.poke(idtr, &d);
    a.mov_rax(idtr);
    a.lidt_rax();
    // LAPIC on; IOAPIC pin 5 (virtio device 0) -> vector 0x40, edge, CPU 0.
    a.write32(0xfee0_00f0, 0x1ff);
    a.write32(0xfec0_0000, 0x10 + 2 * 5);
    a.write32(0xfec0_0010, 0x40);
    a.write32(0xfec0_0000, 0x11 + 2 * 5);
    a.write32(0xfec0_0010, 0);
    a.sti();
    a.virtio_console_init(0, fail);
    a.virtio_console_init(2, fail);
    a.virtio_console_send(0, 1, b"interrupt me\n", fail);
    a.wait16(FLAG, 1);
    a.cli();
    a.print("irq delivered\n");
    a.virtio_console_send(2, 1, b"exit 0\n", fail);
    a.poweroff();
    a.bind(fail);
    a.print("FAIL\n");
    a.poweroff();
    let (kernel, initrd) = write_guest(&dir, "irq", a);
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out, &log));
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("irq delivered"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "interrupt me\n");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn secondary_cpu_starts_on_init_sipi() {
    require_kvm!();
    let dir = scratch("kvm-smp");
    let mut a = Asm::new();
    let fail = a.label();
    // Real-mode code for the AP at 0x10000 (SIPI vector 0x10): print "AP",
    // set the flag, halt.
    let ap: &[u8] = &[
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'A', 0xee, // mov al, 'A'; out dx, al
        0xb0, b'P', 0xee, // mov al, 'P'; out dx, al
        0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
        0x31, 0xc0, // xor ax, ax
        0x8e, 0xd8, // mov ds, ax
        0xc6, 0x06, 0x00, 0x30, 0x01, // mov byte [0x3000], 1
        0xfa, 0xf4, // cli; hlt
        0xeb, 0xfd, // jmp hlt
    ];
    a.poke(0x1_0000, ap);
    a.write32(0xfee0_00f0, 0x1ff); // LAPIC software-enabled
    a.write32(0xfee0_0310, 1 << 24); // to APIC id 1
    a.write32(0xfee0_0300, 0x0000_4500); // INIT
    a.write32(0xfee0_0300, 0x0000_4610); // SIPI, vector 0x10
    a.write32(0xfee0_0300, 0x0000_4610); // and again, as the MP spec says
    a.wait16(FLAG, 1);
    a.print("BSP saw the AP\n");
    a.virtio_console_init(2, fail);
    a.virtio_console_send(2, 1, b"exit 0\n", fail);
    a.poweroff();
    a.bind(fail);
    a.print("FAIL\n");
    a.poweroff();
    let (kernel, initrd) = write_guest(&dir, "smp", a);
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["--cpus", "2", "--", "true"]);
    let serial = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out, &log));
    assert!(
        serial.contains("AP\n") && serial.contains("BSP saw the AP"),
        "{serial}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn host_input_reaches_com1() {
    require_kvm!();
    let dir = scratch("kvm-com1-in");
    let mut a = Asm::new();
    a.print("type: ");
    // Echo three received bytes back: poll LSR.DR, read RBR, write THR.
    for _ in 0..3 {
        let wait = a.label();
        a.bind(wait);
        a.pause();
        a.mov_dx(0x3fd);
        a.in_al_dx();
        a.test_al(1);
        a.jz(wait);
        a.mov_dx(0x3f8);
        a.in_al_dx();
        a.out_dx_al();
    }
    a.poweroff();
    let (kernel, initrd) = write_guest(&dir, "com1", a);
    let log = dir.join("serial.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dxvmm"))
        .args([
            "run",
            "--accel",
            "kvm",
            "--memory",
            "64M",
            "--timeout",
            "15",
        ])
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initramfs")
        .arg(&initrd)
        .arg("--serial-log")
        .arg(&log)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"ok\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out, &log));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "type: ok\n");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_internal_error_is_reported_with_its_cause() {
    require_kvm!();
    if !std::path::Path::new("/sys/module/kvm_pvm").exists() {
        eprintln!("skipped: only a software KVM fails on popcnt");
        return;
    }
    let dir = scratch("kvm-internal");
    let mut a = Asm::new();
    a.print("before\n");
    let at = a.here();
    a.popcnt();
    a.print("popcnt ran\n");
    a.poweroff();
    let (kernel, initrd) = write_guest(&dir, "popcnt", a);
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["--", "true"]);
    assert_eq!(out.status.code(), Some(122), "{}", describe(&out, &log));
    let err = String::from_utf8_lossy(&out.stderr);
    let want =
        format!("could not emulate an instruction (1) at rip {at:#x}; last console line: before");
    assert!(err.contains(&want), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn large_guest_sees_ram_above_4g_in_its_e820_map() {
    require_kvm!();
    let dir = scratch("kvm-bigmem");
    let mut a = Asm::new();
    let fail = a.label();
    // The zero page (RSI at entry; at 0x7000): e820_entries at 0x1e8, the
    // table at 0x2d0, 20 bytes an entry.
    let zp = 0x7000u64;
    a.expect32(zp + 0x1e8, 0xff, 4, fail);
    let e3 = zp + 0x2d0 + 3 * 20;
    a.expect32(e3, u32::MAX, 0, fail); // addr low
    a.expect32(e3 + 4, u32::MAX, 1, fail); // addr high: 4 GiB
    a.expect32(e3 + 8, u32::MAX, 0xb000_0000, fail); // size: 6 GiB - 3.25 GiB
    a.expect32(e3 + 16, u32::MAX, 1, fail); // RAM
    a.print("e820 ok\n");
    a.poweroff();
    a.bind(fail);
    a.print("FAIL\n");
    a.poweroff();
    let (kernel, initrd) = write_guest(&dir, "bigmem", a);
    let log = dir.join("serial.log");
    let out = Command::new(env!("CARGO_BIN_EXE_dxvmm"))
        .args(["run", "--accel", "kvm", "--memory", "6G", "--timeout", "15"])
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initramfs")
        .arg(&initrd)
        .arg("--serial-log")
        .arg(&log)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    if String::from_utf8_lossy(&out.stderr).contains("more than this host has") {
        eprintln!("skipped: this host has less than 6 GiB");
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out, &log));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "e820 ok\n");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_bad_descriptor_needs_a_reset_and_the_vm_runs_on() {
    require_kvm!();
    let dir = scratch("kvm-baddesc");
    let mut a = Asm::new();
    let fail = a.label();
    a.virtio_console_init(0, fail);
    // A buffer in the MMIO gap, where there is no guest memory.
    a.virtio_console_post(0, 1, 0xe000_0000, 64);
    // The device gives up on the queue: DEVICE_NEEDS_RESET, and a
    // configuration-change interrupt.
    a.wait32(VIRTIO_BASE + 0x70, 0x40, 0x40);
    a.expect32(VIRTIO_BASE + 0x60, 2, 2, fail);
    a.print("device needs reset\n");
    // The driver resets it and starts over; the device works again.
    a.virtio_console_init(0, fail);
    a.virtio_console_send(0, 1, b"after the reset\n", fail);
    a.virtio_console_init(2, fail);
    a.virtio_console_send(2, 1, b"exit 0\n", fail);
    a.poweroff();
    a.bind(fail);
    a.print("FAIL\n");
    a.poweroff();
    let (kernel, initrd) = write_guest(&dir, "baddesc", a);
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out, &log));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "after the reset\n");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("device needs reset"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn keyboard_controller_reset_ends_the_run() {
    require_kvm!();
    let dir = scratch("kvm-i8042");
    let mut a = Asm::new();
    a.outb(0x64, 0xfe);
    a.hlt();
    let (kernel, initrd) = write_guest(&dir, "i8042", a);
    let log = dir.join("serial.log");
    // Without a command, a reboot is the end of the session: status 0.
    let out = dxvmm(&kernel, &initrd, &log, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out, &log));
    let out = dxvmm(&kernel, &initrd, &log, &["--", "true"]);
    assert_eq!(out.status.code(), Some(122), "{}", describe(&out, &log));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keyboard controller"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn verbose_shows_the_kernel_console_on_stderr() {
    require_kvm!();
    let dir = scratch("kvm-verbose");
    let mut a = Asm::new();
    a.print("console line\n");
    a.poweroff();
    let (kernel, initrd) = write_guest(&dir, "verbose", a);
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["-v"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out, &log));
    assert!(String::from_utf8_lossy(&out.stderr).contains("console line\n"));
    assert!(out.stdout.is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

/// A guest that sends one CREATEPROCESS to the dxg device through its
/// request queue, checks the reply frame and reports `exit 0` on hvc2, or
/// says on COM1 what was wrong and reports `exit 1`.
fn dxg_guest() -> Asm {
    const REQUEST_ID: u64 = 0x0dd5_0001;
    let request = dxg::create_process_frame(REQUEST_ID);
    let reply = dxg::create_process_reply(REQUEST_ID);
    let q = dxg::request_queue();
    let mut a = Asm::new();
    let console_broken = a.label();
    let no_device = a.label();
    let not_used = a.label();
    let bad_header = a.label();
    let bad_status = a.label();
    let null_handle = a.label();
    let report_failure = a.label();

    a.virtio_console_init(2, console_broken);
    a.print("dxg test guest: up\n");
    a.virtio_dxg_init(no_device);
    let frame = a.data(&request);
    a.dxg_chain(frame, request.len() as u32);
    a.dxg_submit(1);
    // used.ring[0]: our chain (head 0), with the whole reply written.
    a.expect32(q.used + 4, u32::MAX, 0, not_used);
    a.expect32(q.used + 8, u32::MAX, reply.len() as u32, not_used);
    // The reply header, dword by dword, as dxvmm-protocol encodes it:
    // magic, version and REPLY flag, our request id, payload length,
    // STATUS_SUCCESS, the (zero) vGPU LUID of a global command.
    for (i, word) in reply[..dxg::HEADER_SIZE as usize].chunks(4).enumerate() {
        let offset = i as u64 * 4;
        let want = u32::from_le_bytes(word.try_into().unwrap());
        let fail = if offset == dxg::HEADER_STATUS {
            bad_status
        } else {
            bad_header
        };
        a.expect32(q.buffer + offset, u32::MAX, want, fail);
    }
    // The payload: the host's handle for the new process.
    a.expect_nonzero32(q.buffer + dxg::HEADER_SIZE, null_handle);
    a.print("dxg test guest: CREATEPROCESS reply ok\n");
    a.virtio_console_send(2, 1, b"exit 0\n", console_broken);
    a.poweroff();

    for (label, why) in [
        (
            no_device,
            "no virtio-dxg device in the fourth virtio-mmio window",
        ),
        (not_used, "the device did not use the chain as expected"),
        (bad_header, "the reply header is not a reply to our request"),
        (bad_status, "the reply status is not STATUS_SUCCESS"),
        (null_handle, "CREATEPROCESS returned a null process handle"),
    ] {
        a.bind(label);
        a.print(&format!("dxg test guest: FAIL: {why}\n"));
        a.jmp(report_failure);
    }
    a.bind(report_failure);
    a.virtio_console_send(2, 1, b"exit 1\n", console_broken);
    a.poweroff();
    a.bind(console_broken);
    a.print("dxg test guest: FAIL: the control console\n");
    a.poweroff();
    a
}

#[test]
fn guest_drives_the_dxg_device_through_its_request_queue() {
    require_kvm!();
    let dir = scratch("kvm-dxg");
    let (kernel, initrd) = write_guest(&dir, "dxg", dxg_guest());
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["--gpu", "all", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !(out.status.code() == Some(125) && err.contains("--gpu")),
        "this test needs a Vulkan adapter on the host (Mesa's lavapipe will do: \
         mesa-vulkan-drivers); dxvmm said: {err}"
    );
    let serial = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out, &log));
    assert!(serial.contains("CREATEPROCESS reply ok"), "{serial}");
    std::fs::remove_dir_all(dir).unwrap();
}
