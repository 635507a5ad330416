//! ACPI tables dxvmm writes for the guest: RSDP, XSDT, FADT (hardware
//! reduced), MADT and a DSDT.
//!
//! The DSDT is the only way virtio-mmio devices reach Debian's cloud kernel,
//! which lacks CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES: each device is an ACPI
//! device with _HID "LNRO0005" (what Linux's virtio_mmio driver matches)
//! and a _CRS naming its register window and interrupt, as QEMU's microvm
//! and Firecracker do. Power-off and reset go through the FADT's
//! hardware-reduced sleep control and reset registers, which dxvmm serves on
//! I/O ports.

use super::layout;

const OEM_ID: &[u8; 6] = b"DXVMM ";
const OEM_TABLE_ID: &[u8; 8] = b"DXVMMVM ";
const CREATOR_ID: &[u8; 4] = b"DXVM";
const HEADER_LEN: usize = 36;

/// A virtio-mmio device as the DSDT describes it.
#[derive(Debug, Clone, Copy)]
pub struct MmioDevice {
    pub addr: u64,
    pub size: u64,
    pub gsi: u32,
}

/// The tables, laid out from `base`: the RSDP first (so that a legacy scan
/// of 0xe0000 finds it), the others after it.
pub struct Tables {
    pub bytes: Vec<u8>,
    pub rsdp_addr: u64,
}

/// Sum of all bytes is zero: the checksum byte that makes it so.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// A system description table: header plus `body`, checksummed.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let len = HEADER_LEN + body.len();
    let mut t = Vec::with_capacity(len);
    t.extend_from_slice(signature);
    t.extend_from_slice(&(len as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(CREATOR_ID);
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// Generic Address Structure for a byte-wide I/O port.
fn gas_io_byte(port: u16) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1; // system I/O space
    g[1] = 8; // register bit width
    g[2] = 0; // bit offset
    g[3] = 1; // access size: byte
    g[4..12].copy_from_slice(&(port as u64).to_le_bytes());
    g
}

fn fadt(dsdt_addr: u64) -> Vec<u8> {
    // Offsets below are from the start of the table (ACPI 6.x, table 5.9).
    let mut t = vec![0u8; 276];
    let put = |t: &mut Vec<u8>, off: usize, b: &[u8]| t[off..off + b.len()].copy_from_slice(b);
    // DSDT (32-bit) and X_DSDT: both, for the kernel's sake.
    put(&mut t, 40, &(dsdt_addr as u32).to_le_bytes());
    // IAPC_BOOT_ARCH: no VGA, no MSI, no 8042 (so the guest does not probe
    // a keyboard controller; reset goes through the reset register).
    put(&mut t, 109, &(0x0004u16 | 0x0008).to_le_bytes());
    // Flags: WBINVD, PROC_C1, RESET_REG_SUP, HW_REDUCED_ACPI.
    let flags: u32 = (1 << 0) | (1 << 2) | (1 << 10) | (1 << 20);
    put(&mut t, 112, &flags.to_le_bytes());
    put(&mut t, 116, &gas_io_byte(layout::ACPI_RESET_PORT));
    t[128] = layout::ACPI_RESET_VALUE;
    t[131] = 3; // FADT minor version (ACPI 6.3)
    put(&mut t, 140, &dsdt_addr.to_le_bytes());
    put(&mut t, 244, &gas_io_byte(layout::ACPI_SLEEP_CONTROL_PORT));
    put(&mut t, 256, &gas_io_byte(layout::ACPI_SLEEP_STATUS_PORT));
    put(&mut t, 268, b"DXVMMKVM");
    sdt(b"FACP", 6, &t[HEADER_LEN..])
}

fn madt(cpus: u8) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(layout::LAPIC_ADDR as u32).to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: there is an 8259 pair
    for id in 0..cpus {
        // Processor Local APIC: uid, APIC id, enabled.
        b.extend_from_slice(&[0, 8, id, id]);
        b.extend_from_slice(&1u32.to_le_bytes());
    }
    // I/O APIC: id 0 (its own namespace), its address, GSI base 0.
    b.extend_from_slice(&[1, 12, 0, 0]);
    b.extend_from_slice(&(layout::IOAPIC_ADDR as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    sdt(b"APIC", 5, &b)
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = entries.iter().flat_map(|a| a.to_le_bytes()).collect();
    sdt(b"XSDT", 1, &body)
}

fn rsdp(xsdt_addr: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(36);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0); // checksum of the first 20 bytes
    r.extend_from_slice(OEM_ID);
    r.push(2); // revision: ACPI 2.0+, XSDT
    r.extend_from_slice(&0u32.to_le_bytes()); // no RSDT
    r.extend_from_slice(&36u32.to_le_bytes());
    r.extend_from_slice(&xsdt_addr.to_le_bytes());
    r.push(0); // extended checksum
    r.extend_from_slice(&[0; 3]);
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

/// AML encoding of the few objects the DSDT needs (ACPI 6.x, chapter 20).
pub mod aml {
    pub const ZERO: u8 = 0x00;
    const NAME_OP: u8 = 0x08;
    const SCOPE_OP: u8 = 0x10;
    const BUFFER_OP: u8 = 0x11;
    const PACKAGE_OP: u8 = 0x12;
    const STRING_PREFIX: u8 = 0x0d;
    const EXT_OP_PREFIX: u8 = 0x5b;
    const DEVICE_OP: u8 = 0x82;

    /// PkgLength: the length of what follows the opcode, the encoding's own
    /// bytes included, in 1 to 4 bytes.
    pub fn pkg_length(content_len: usize) -> Vec<u8> {
        if content_len + 1 < 0x40 {
            return vec![(content_len + 1) as u8];
        }
        for n in 2..=4usize {
            let total = content_len + n;
            if total < 1 << (4 + 8 * (n - 1)) {
                let mut v = vec![(((n - 1) as u8) << 6) | (total & 0xf) as u8];
                for i in 0..n - 1 {
                    v.push((total >> (4 + 8 * i)) as u8);
                }
                return v;
            }
        }
        // 2^28 bytes of AML: not something a handful of devices produce.
        unreachable!("AML package of {content_len} bytes")
    }

    pub fn integer(v: u64) -> Vec<u8> {
        match v {
            0 => vec![0x00],
            1 => vec![0x01],
            2..=0xff => vec![0x0a, v as u8],
            0x100..=0xffff => [&[0x0b][..], &(v as u16).to_le_bytes()].concat(),
            0x1_0000..=0xffff_ffff => [&[0x0c][..], &(v as u32).to_le_bytes()].concat(),
            _ => [&[0x0e][..], &v.to_le_bytes()].concat(),
        }
    }

    pub fn string(s: &str) -> Vec<u8> {
        let mut v = vec![STRING_PREFIX];
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        v
    }

    /// A NameSeg path: four characters, or `\` plus four for the root scope.
    fn name_string(name: &str) -> Vec<u8> {
        debug_assert!(name.trim_start_matches('\\').len() == 4);
        name.as_bytes().to_vec()
    }

    pub fn name(name: &str, value: Vec<u8>) -> Vec<u8> {
        let mut v = vec![NAME_OP];
        v.extend(name_string(name));
        v.extend(value);
        v
    }

    fn with_pkg(prefix: &[u8], content: Vec<u8>) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.extend(pkg_length(content.len()));
        v.extend(content);
        v
    }

    pub fn scope(name: &str, body: Vec<u8>) -> Vec<u8> {
        let mut content = name_string(name);
        content.extend(body);
        with_pkg(&[SCOPE_OP], content)
    }

    pub fn device(name: &str, body: Vec<u8>) -> Vec<u8> {
        let mut content = name_string(name);
        content.extend(body);
        with_pkg(&[EXT_OP_PREFIX, DEVICE_OP], content)
    }

    pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
        let mut content = vec![elements.len() as u8];
        for e in elements {
            content.extend_from_slice(e);
        }
        with_pkg(&[PACKAGE_OP], content)
    }

    pub fn buffer(bytes: &[u8]) -> Vec<u8> {
        let mut content = integer(bytes.len() as u64);
        content.extend_from_slice(bytes);
        with_pkg(&[BUFFER_OP], content)
    }

    /// ResourceTemplate { Memory32Fixed(ReadWrite, addr, len)
    /// Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi } }.
    pub fn mmio_resources(addr: u32, len: u32, gsi: u32) -> Vec<u8> {
        let mut r = vec![0x86, 9, 0, 1]; // Memory32Fixed, length 9, read-write
        r.extend_from_slice(&addr.to_le_bytes());
        r.extend_from_slice(&len.to_le_bytes());
        // Extended Interrupt: length 6, flags consumer|edge, one interrupt.
        r.extend_from_slice(&[0x89, 6, 0, 0b0000_0011, 1]);
        r.extend_from_slice(&gsi.to_le_bytes());
        r.extend_from_slice(&[0x79, 0]); // End tag, checksum 0 = "not computed"
        buffer(&r)
    }
}

fn dsdt(devices: &[MmioDevice]) -> Vec<u8> {
    let mut sb = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let name = format!("VR{i:02X}");
        let mut body = aml::name("_HID", aml::string("LNRO0005"));
        body.extend(aml::name("_UID", aml::integer(i as u64)));
        body.extend(aml::name(
            "_CRS",
            aml::mmio_resources(d.addr as u32, d.size as u32, d.gsi),
        ));
        sb.extend(aml::device(&name, body));
    }
    let mut body = aml::scope("\\_SB_", sb);
    // \_S5_: the SLP_TYP the kernel writes to the sleep control register
    // to power off.
    body.extend(aml::name(
        "_S5_",
        aml::package(&[
            aml::integer(layout::ACPI_S5_SLP_TYP as u64),
            vec![aml::ZERO],
        ]),
    ));
    sdt(b"DSDT", 2, &body)
}

/// Builds every table for a guest with `cpus` vCPUs and `devices`, to be
/// written at guest-physical `base`.
pub fn build(base: u64, cpus: u8, devices: &[MmioDevice]) -> Tables {
    let align = |n: usize| (n + 7) & !7;
    let rsdp_len = 36;
    let dsdt = dsdt(devices);
    let dsdt_off = align(rsdp_len);
    let fadt = fadt(base + dsdt_off as u64);
    let fadt_off = align(dsdt_off + dsdt.len());
    let madt = madt(cpus);
    let madt_off = align(fadt_off + fadt.len());
    let xsdt_off = align(madt_off + madt.len());
    let xsdt = xsdt(&[base + fadt_off as u64, base + madt_off as u64]);
    let rsdp = rsdp(base + xsdt_off as u64);
    let mut bytes = vec![0u8; xsdt_off + xsdt.len()];
    for (off, t) in [
        (0, &rsdp),
        (dsdt_off, &dsdt),
        (fadt_off, &fadt),
        (madt_off, &madt),
        (xsdt_off, &xsdt),
    ] {
        bytes[off..off + t.len()].copy_from_slice(t);
    }
    Tables {
        bytes,
        rsdp_addr: base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    /// Follows RSDP -> XSDT -> tables as a guest would, checking every
    /// checksum; returns the tables by signature.
    fn walk(t: &Tables, base: u64) -> Vec<(String, Vec<u8>)> {
        let b = &t.bytes;
        let at = |addr: u64| (addr - base) as usize;
        let rsdp = &b[at(t.rsdp_addr)..at(t.rsdp_addr) + 36];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0, "RSDP checksum");
        assert_eq!(sum(rsdp), 0, "RSDP extended checksum");
        let table = |addr: u64| {
            let o = at(addr);
            let len = u32_at(b, o + 4) as usize;
            let tb = b[o..o + len].to_vec();
            assert_eq!(
                sum(&tb),
                0,
                "{} checksum",
                String::from_utf8_lossy(&tb[..4])
            );
            (String::from_utf8_lossy(&tb[..4]).to_string(), tb)
        };
        let (sig, xsdt) = table(u64_at(rsdp, 24));
        assert_eq!(sig, "XSDT");
        let mut out = vec![];
        for i in 0..(xsdt.len() - HEADER_LEN) / 8 {
            let t = table(u64_at(&xsdt, HEADER_LEN + i * 8));
            if t.0 == "FACP" {
                out.push(table(u64_at(&t.1, 140)));
                assert_eq!(u32_at(&t.1, 40) as u64, u64_at(&t.1, 140));
            }
            out.push(t);
        }
        out
    }

    fn devices() -> Vec<MmioDevice> {
        (0..3)
            .map(|i| MmioDevice {
                addr: layout::virtio_mmio_addr(i),
                size: 0x1000,
                gsi: layout::VIRTIO_GSIS[i],
            })
            .collect()
    }

    #[test]
    fn tables_chain_and_checksum() {
        let t = build(layout::ACPI_ADDR, 2, &devices());
        assert!(t.bytes.len() <= layout::ACPI_MAX);
        let sigs: Vec<String> = walk(&t, layout::ACPI_ADDR)
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(sigs, ["DSDT", "FACP", "APIC"]);
    }

    #[test]
    fn fadt_is_hardware_reduced_with_sleep_and_reset_registers() {
        let t = build(layout::ACPI_ADDR, 1, &devices());
        let tables = walk(&t, layout::ACPI_ADDR);
        let fadt = &tables.iter().find(|t| t.0 == "FACP").unwrap().1;
        assert_eq!(fadt.len(), 276);
        assert_eq!(fadt[8], 6);
        let flags = u32_at(fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        assert_eq!(fadt[116], 1);
        assert_eq!(u64_at(fadt, 120), layout::ACPI_RESET_PORT as u64);
        assert_eq!(fadt[128], layout::ACPI_RESET_VALUE);
        assert_eq!(u64_at(fadt, 248), layout::ACPI_SLEEP_CONTROL_PORT as u64);
        assert_eq!(u64_at(fadt, 260), layout::ACPI_SLEEP_STATUS_PORT as u64);
    }

    #[test]
    fn madt_lists_every_cpu_and_the_ioapic() {
        let t = build(layout::ACPI_ADDR, 4, &[]);
        let tables = walk(&t, layout::ACPI_ADDR);
        let madt = &tables.iter().find(|t| t.0 == "APIC").unwrap().1;
        assert_eq!(u32_at(madt, 36), 0xfee0_0000);
        let mut off = 44;
        let mut apic_ids = vec![];
        let mut ioapics = 0;
        while off < madt.len() {
            let (kind, len) = (madt[off], madt[off + 1] as usize);
            match kind {
                0 => {
                    assert_eq!(len, 8);
                    assert_eq!(u32_at(madt, off + 4), 1, "enabled");
                    apic_ids.push(madt[off + 3]);
                }
                1 => {
                    assert_eq!(u32_at(madt, off + 4), 0xfec0_0000);
                    ioapics += 1;
                }
                k => panic!("unexpected MADT entry {k}"),
            }
            off += len;
        }
        assert_eq!(off, madt.len());
        assert_eq!(apic_ids, [0, 1, 2, 3]);
        assert_eq!(ioapics, 1);
    }

    #[test]
    fn dsdt_describes_the_virtio_devices() {
        let t = build(layout::ACPI_ADDR, 1, &devices());
        let tables = walk(&t, layout::ACPI_ADDR);
        let dsdt = &tables.iter().find(|t| t.0 == "DSDT").unwrap().1;
        let body = &dsdt[HEADER_LEN..];
        let count = |needle: &[u8]| body.windows(needle.len()).filter(|w| *w == needle).count();
        assert_eq!(count(b"LNRO0005\0"), 3);
        for (i, d) in devices().iter().enumerate() {
            let mut crs = vec![0x86, 9, 0, 1];
            crs.extend_from_slice(&(d.addr as u32).to_le_bytes());
            crs.extend_from_slice(&0x1000u32.to_le_bytes());
            crs.extend_from_slice(&[0x89, 6, 0, 3, 1]);
            crs.extend_from_slice(&d.gsi.to_le_bytes());
            assert_eq!(count(&crs), 1, "device {i}");
            assert_eq!(count(format!("VR{i:02X}").as_bytes()), 1);
        }
        assert_eq!(count(b"_S5_\x12\x05\x02\x0a\x05\x00"), 1);
        // \_SB_ scope whose PkgLength spans the rest of the devices.
        assert_eq!(&body[..1], &[0x10]);
    }

    /// ACPICA's disassembler, where installed (acpica-tools), reads every
    /// table back as the kernel's interpreter would see it.
    #[test]
    fn acpica_disassembles_the_tables() {
        if std::process::Command::new("iasl")
            .arg("-v")
            .output()
            .is_err()
        {
            eprintln!("skipped: iasl (acpica-tools) is not installed");
            return;
        }
        let t = build(layout::ACPI_ADDR, 2, &devices());
        let dir = std::env::temp_dir().join(format!("dxvmm-acpi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::new();
        for (sig, table) in walk(&t, layout::ACPI_ADDR) {
            let f = dir.join(format!("{}.dat", sig.to_lowercase()));
            std::fs::write(&f, &table).unwrap();
            let out = std::process::Command::new("iasl")
                .arg("-d")
                .arg(&f)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "iasl -d {sig}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            text += &std::fs::read_to_string(f.with_extension("dsl")).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
        for want in [
            "Device (VR00)",
            "Device (VR02)",
            "Name (_HID, \"LNRO0005\")",
            "Memory32Fixed (ReadWrite,\n                    0xD0001000,         // Address Base\n                    0x00001000,         // Address Length",
            "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n                {\n                    0x00000007,",
            "Name (_S5, Package (0x02)",
            "Hardware Reduced (V5) : 1",
            "Local Apic ID : 01",
            "Address : FEC00000",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.to_lowercase().contains("invalid"), "{text}");
    }

    #[test]
    fn pkg_length_encodings() {
        assert_eq!(aml::pkg_length(0), [1]);
        assert_eq!(aml::pkg_length(0x3e), [0x3f]);
        // 0x3f bytes + 2 = 0x41: two-byte form, low nibble 1, then 0x04.
        assert_eq!(aml::pkg_length(0x3f), [0x41, 0x04]);
        assert_eq!(aml::pkg_length(0xffd), [0x4f, 0xff]);
        assert_eq!(aml::pkg_length(0xffe), [0x81, 0x00, 0x01]);
        assert_eq!(aml::integer(0x1234), [0x0b, 0x34, 0x12]);
        assert_eq!(aml::integer(0xd000_0000), [0x0c, 0, 0, 0, 0xd0]);
    }
}
