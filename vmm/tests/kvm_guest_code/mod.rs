//! Test guests for the KVM engine: a few hundred bytes of 64-bit machine
//! code, assembled here, in a minimal ELF that dxvmm loads like a vmlinux
//! without a PVH note (64-bit entry, paging on, low 4 GiB identity-mapped).
//!
//! The guest talks to dxvmm only through devices: COM1 for text, the
//! virtio-mmio consoles (driven through their registers and split queues,
//! as Linux's driver does), and the ACPI sleep register to power off.
#![allow(dead_code)]

pub mod dxg;

use std::path::{Path, PathBuf};

/// Where the code is loaded and entered.
pub const LOAD_ADDR: u64 = 0x20_0000;
/// Data (strings) follow the code at this offset in the same segment.
const DATA_OFFSET: usize = 0x1000;
/// Rings and buffers of virtio device `d` live at RING_BASE + d * 0x1_0000.
const RING_BASE: u64 = 0x40_0000;
pub const VIRTIO_BASE: u64 = 0xd000_0000;
const QUEUE_SIZE: u32 = 16;

/// Guest addresses of the one queue a test guest sets up on a device.
pub struct Rings {
    /// Descriptor table.
    pub desc: u64,
    /// Driver area (avail ring): flags u16, idx u16, ring[QUEUE_SIZE] u16.
    pub avail: u64,
    /// Device area (used ring): flags u16, idx u16, ring of (id u32, len u32).
    pub used: u64,
    /// A page free for the device's replies.
    pub buffer: u64,
}

/// Where device `dev`'s queue lives: RING_BASE + dev * 64 KiB.
pub fn rings(dev: u64) -> Rings {
    let base = RING_BASE + dev * 0x1_0000;
    Rings {
        desc: base,
        avail: base + 0x1000,
        used: base + 0x2000,
        buffer: base + 0x3000,
    }
}

/// A tiny x86-64 assembler: only the instructions the test guests use.
#[derive(Default)]
pub struct Asm {
    code: Vec<u8>,
    data: Vec<u8>,
    /// (position of a rel32, label it jumps to)
    fixups: Vec<(usize, usize)>,
    labels: Vec<Option<usize>>,
}

#[derive(Clone, Copy)]
pub struct Label(usize);

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.code.len());
    }

    fn emit(&mut self, b: &[u8]) {
        self.code.extend_from_slice(b);
    }

    fn rel32(&mut self, opcode: &[u8], l: Label) {
        self.emit(opcode);
        self.fixups.push((self.code.len(), l.0));
        self.emit(&[0; 4]);
    }

    /// mov rax, imm64
    pub fn mov_rax(&mut self, v: u64) {
        self.emit(&[0x48, 0xb8]);
        self.emit(&v.to_le_bytes());
    }
    /// mov ebx, imm32
    pub fn mov_ebx(&mut self, v: u32) {
        self.emit(&[0xbb]);
        self.emit(&v.to_le_bytes());
    }
    /// mov ecx, imm32
    pub fn mov_ecx(&mut self, v: u32) {
        self.emit(&[0xb9]);
        self.emit(&v.to_le_bytes());
    }
    /// mov esi, imm32
    pub fn mov_esi(&mut self, v: u32) {
        self.emit(&[0xbe]);
        self.emit(&v.to_le_bytes());
    }
    /// inc esi
    pub fn inc_esi(&mut self) {
        self.emit(&[0xff, 0xc6]);
    }
    /// mov word [rax], si
    pub fn store_si(&mut self) {
        self.emit(&[0x66, 0x89, 0x30]);
    }
    /// cmp bx, si
    pub fn cmp_bx_si(&mut self) {
        self.emit(&[0x66, 0x39, 0xf3]);
    }
    /// mov dword [rax], ebx
    pub fn store_ebx(&mut self) {
        self.emit(&[0x89, 0x18]);
    }
    /// mov ebx, dword [rax]
    pub fn load_ebx(&mut self) {
        self.emit(&[0x8b, 0x18]);
    }
    /// movzx ebx, word [rax]
    pub fn load_ebx_u16(&mut self) {
        self.emit(&[0x0f, 0xb7, 0x18]);
    }
    /// and ebx, imm32
    pub fn and_ebx(&mut self, v: u32) {
        self.emit(&[0x81, 0xe3]);
        self.emit(&v.to_le_bytes());
    }
    /// cmp ebx, imm32
    pub fn cmp_ebx(&mut self, v: u32) {
        self.emit(&[0x81, 0xfb]);
        self.emit(&v.to_le_bytes());
    }
    pub fn jne(&mut self, l: Label) {
        self.rel32(&[0x0f, 0x85], l);
    }
    pub fn jmp(&mut self, l: Label) {
        self.rel32(&[0xe9], l);
    }
    /// dec ecx; jnz l
    pub fn loop_ecx(&mut self, l: Label) {
        self.emit(&[0xff, 0xc9]);
        self.rel32(&[0x0f, 0x85], l);
    }
    /// mov dx, imm16
    pub fn mov_dx(&mut self, port: u16) {
        self.emit(&[0x66, 0xba]);
        self.emit(&port.to_le_bytes());
    }
    /// mov al, imm8
    pub fn mov_al(&mut self, v: u8) {
        self.emit(&[0xb0, v]);
    }
    /// out dx, al
    pub fn out_dx_al(&mut self) {
        self.emit(&[0xee]);
    }
    /// in al, dx
    pub fn in_al_dx(&mut self) {
        self.emit(&[0xec]);
    }
    pub fn sti(&mut self) {
        self.emit(&[0xfb]);
    }
    pub fn cli(&mut self) {
        self.emit(&[0xfa]);
    }
    /// lidt [rax]
    pub fn lidt_rax(&mut self) {
        self.emit(&[0x0f, 0x01, 0x18]);
    }
    pub fn iretq(&mut self) {
        self.emit(&[0x48, 0xcf]);
    }
    /// push rax; push rbx
    pub fn save(&mut self) {
        self.emit(&[0x50, 0x53]);
    }
    /// pop rbx; pop rax
    pub fn restore(&mut self) {
        self.emit(&[0x5b, 0x58]);
    }
    /// Guest address of the next instruction.
    pub fn here(&self) -> u64 {
        LOAD_ADDR + self.code.len() as u64
    }
    /// out imm8 to `port` (clobbers dx, al).
    pub fn outb(&mut self, port: u16, v: u8) {
        self.mov_dx(port);
        self.mov_al(v);
        self.out_dx_al();
    }
    /// Copies raw bytes to guest memory at run time (dword writes).
    pub fn poke(&mut self, addr: u64, bytes: &[u8]) {
        for (i, c) in bytes.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            self.write32(addr + i as u64 * 4, u32::from_le_bytes(w));
        }
    }
    pub fn nop(&mut self) {
        self.emit(&[0x90]);
    }
    /// test al, imm8
    pub fn test_al(&mut self, v: u8) {
        self.emit(&[0xa8, v]);
    }
    pub fn jz(&mut self, l: Label) {
        self.rel32(&[0x0f, 0x84], l);
    }
    pub fn pause(&mut self) {
        self.emit(&[0xf3, 0x90]);
    }
    pub fn hlt(&mut self) {
        self.emit(&[0xf4]);
    }
    /// popcnt eax, ebx: an instruction KVM's emulator does not know.
    pub fn popcnt(&mut self) {
        self.emit(&[0xf3, 0x0f, 0xb8, 0xc3]);
    }
    /// ud2: with no IDT, the #UD escalates to a triple fault.
    pub fn ud2(&mut self) {
        self.emit(&[0x0f, 0x0b]);
    }

    /// Adds bytes to the data area; returns their guest address.
    pub fn data(&mut self, bytes: &[u8]) -> u64 {
        let addr = LOAD_ADDR + (DATA_OFFSET + self.data.len()) as u64;
        self.data.extend_from_slice(bytes);
        addr
    }

    // Higher-level helpers.

    pub fn write32(&mut self, addr: u64, v: u32) {
        self.mov_rax(addr);
        self.mov_ebx(v);
        self.store_ebx();
    }

    /// Jumps to `fail` unless the 32-bit value at `addr` (masked) is `v`.
    pub fn expect32(&mut self, addr: u64, mask: u32, v: u32, fail: Label) {
        self.mov_rax(addr);
        self.load_ebx();
        if mask != u32::MAX {
            self.and_ebx(mask);
        }
        self.cmp_ebx(v);
        self.jne(fail);
    }

    /// Jumps to `fail` if the 32-bit value at `addr` is zero.
    pub fn expect_nonzero32(&mut self, addr: u64, fail: Label) {
        self.mov_rax(addr);
        self.load_ebx();
        self.cmp_ebx(0);
        self.jz(fail);
    }

    /// Spins until the 16-bit value at `addr` is `v`.
    pub fn wait16(&mut self, addr: u64, v: u16) {
        let top = self.label();
        self.bind(top);
        self.pause();
        self.mov_rax(addr);
        self.load_ebx_u16();
        self.cmp_ebx(v as u32);
        self.jne(top);
    }

    /// Spins until the 32-bit value at `addr`, masked, is `v`.
    pub fn wait32(&mut self, addr: u64, mask: u32, v: u32) {
        let top = self.label();
        self.bind(top);
        self.pause();
        self.mov_rax(addr);
        self.load_ebx();
        self.and_ebx(mask);
        self.cmp_ebx(v);
        self.jne(top);
    }

    /// Writes `text` to COM1.
    pub fn print(&mut self, text: &str) {
        self.mov_dx(0x3f8);
        for b in text.bytes() {
            self.mov_al(b);
            self.out_dx_al();
        }
    }

    /// ACPI S5 through the FADT's sleep control register, then halts.
    pub fn poweroff(&mut self) {
        self.mov_dx(0x600);
        self.mov_al((5 << 2) | 0x20);
        self.out_dx_al();
        self.hlt();
    }

    /// Brings up virtio-mmio device `dev` the way Linux's driver does and
    /// readies its transmit queue (1); the rings live in guest RAM.
    pub fn virtio_console_init(&mut self, dev: u64, fail: Label) {
        self.virtio_init(dev, 3, 1, fail);
    }

    /// Brings up virtio-mmio device `dev`, which must have virtio id
    /// `device_id`, with VIRTIO_F_VERSION_1 and one queue, `queue`, of
    /// QUEUE_SIZE entries at [`rings`]`(dev)`.
    pub fn virtio_init(&mut self, dev: u64, device_id: u32, queue: u32, fail: Label) {
        let r = VIRTIO_BASE + dev * 0x1000;
        self.expect32(r, u32::MAX, 0x7472_6976, fail); // "virt"
        self.expect32(r + 0x4, u32::MAX, 2, fail); // version 2
        self.expect32(r + 0x8, u32::MAX, device_id, fail);
        self.write32(r + 0x70, 0); // reset
        self.write32(r + 0x70, 1); // ACKNOWLEDGE
        self.write32(r + 0x70, 3); // DRIVER
        self.write32(r + 0x14, 1); // device features, high word
        self.expect32(r + 0x10, 1, 1, fail); // VIRTIO_F_VERSION_1 offered
        self.write32(r + 0x24, 1);
        self.write32(r + 0x20, 1); // accept VERSION_1
        self.write32(r + 0x70, 0xb); // FEATURES_OK
        self.expect32(r + 0x70, u32::MAX, 0xb, fail);
        self.write32(r + 0x30, queue); // QueueSel
        self.expect32(r + 0x44, u32::MAX, 0, fail);
        self.write32(r + 0x38, QUEUE_SIZE);
        let q = rings(dev);
        for (reg, addr) in [(0x80, q.desc), (0x90, q.avail), (0xa0, q.used)] {
            self.write32(r + reg, addr as u32);
            self.write32(r + reg + 4, 0);
        }
        self.write32(r + 0x44, 1); // QueueReady
        self.write32(r + 0x70, 0xf); // DRIVER_OK
        self.expect32(r + 0x70, u32::MAX, 0xf, fail);
    }

    /// Sends `text` on device `dev`'s transmit queue as the `n`th buffer
    /// (from 1) and waits for the device to use it.
    pub fn virtio_console_send(&mut self, dev: u64, n: u16, text: &[u8], fail: Label) {
        let buf = self.data(text);
        self.virtio_console_post(dev, n, buf, text.len() as u32);
        let r = VIRTIO_BASE + dev * 0x1000;
        self.wait16(rings(dev).used + 2, n); // used.idx
        self.expect32(r + 0x60, 1, 1, fail); // InterruptStatus: used buffer
        self.write32(r + 0x64, 1); // InterruptACK
    }

    /// Publishes buffer `buf` of `len` bytes as the `n`th (from 1) on device
    /// `dev`'s transmit queue and notifies the device.
    pub fn virtio_console_post(&mut self, dev: u64, n: u16, buf: u64, len: u32) {
        let r = VIRTIO_BASE + dev * 0x1000;
        let q = rings(dev);
        let slot = (n - 1) as u64 % QUEUE_SIZE as u64;
        // Descriptor: addr, len, flags 0 (device-readable), next 0.
        let desc = q.desc + slot * 16;
        self.write32(desc, buf as u32);
        self.write32(desc + 4, (buf >> 32) as u32);
        self.write32(desc + 8, len);
        self.write32(desc + 12, 0);
        // avail.ring[slot] = slot; avail.idx = n (flags and idx share a dword).
        self.write32(q.avail + 4 + slot * 2, slot as u32);
        self.write32(q.avail, (n as u32) << 16);
        self.write32(r + 0x50, 1); // QueueNotify(1)
    }

    /// Machine code and data as one segment image.
    pub fn finish(mut self) -> Vec<u8> {
        for (pos, l) in std::mem::take(&mut self.fixups) {
            let target = self.labels[l].expect("unbound label") as i64;
            let rel = (target - (pos as i64 + 4)) as i32;
            self.code[pos..pos + 4].copy_from_slice(&rel.to_le_bytes());
        }
        assert!(self.code.len() <= DATA_OFFSET, "test guest code too large");
        let mut image = self.code;
        image.resize(DATA_OFFSET, 0xcc);
        image.extend_from_slice(&self.data);
        image
    }
}

/// An ELF64 executable with one PT_LOAD of `image` at LOAD_ADDR.
pub fn elf(image: &[u8]) -> Vec<u8> {
    let mut e = vec![0u8; 64 + 56];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2; // ELFCLASS64
    e[5] = 1; // little endian
    e[6] = 1; // version
    e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[24..32].copy_from_slice(&LOAD_ADDR.to_le_bytes()); // e_entry
    e[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    e[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    e[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    e[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let ph = &mut e[64..];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[4..8].copy_from_slice(&7u32.to_le_bytes()); // RWX
    ph[8..16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
    ph[16..24].copy_from_slice(&LOAD_ADDR.to_le_bytes()); // p_vaddr
    ph[24..32].copy_from_slice(&LOAD_ADDR.to_le_bytes()); // p_paddr
    ph[32..40].copy_from_slice(&(image.len() as u64).to_le_bytes());
    ph[40..48].copy_from_slice(&(image.len() as u64).to_le_bytes());
    e.extend_from_slice(image);
    e
}

/// A scratch directory for one test's files.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dxvmm-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes the guest as an ELF file plus an empty initramfs; returns both.
pub fn write_guest(dir: &Path, name: &str, asm: Asm) -> (PathBuf, PathBuf) {
    let kernel = dir.join(format!("{name}.elf"));
    std::fs::write(&kernel, elf(&asm.finish())).unwrap();
    let initrd = dir.join("empty.cpio");
    std::fs::write(&initrd, b"").unwrap();
    (kernel, initrd)
}

/// Whether this host can run KVM guests at all (the tests skip otherwise).
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}
