//! vCPU register state at boot: CPUID, MSRs, FPU, LAPIC, and the segments,
//! page tables and registers each entry protocol expects.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, CpuId, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::boot::Entry;
use super::layout;

/// Errors in setting up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("{0}: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    #[error("cannot write boot page tables: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> CpuError {
    move |e| CpuError::Kvm(what, e)
}

const X86_CR0_PE: u64 = 1;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// CPUID for vCPU `id` of `cpus`, from what KVM supports: the APIC ids
/// the MADT declares, the hypervisor bit, and no PMU (we do not virtualize
/// performance counters).
pub fn cpuid_for(base: &CpuId, id: u8, cpus: u8) -> CpuId {
    let mut c = base.clone();
    for e in c.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | ((id as u32) << 24) | ((cpus as u32) << 16);
                e.ecx |= 1 << 31; // running under a hypervisor
                if cpus > 1 {
                    e.edx |= 1 << 28; // HTT: ebx[23:16] is meaningful
                }
            }
            0xb | 0x1f => {
                // Extended topology: one thread per core, `cpus` cores in
                // one package, so that the guest's view agrees with the MADT.
                let core_shift = u32::BITS - (cpus.max(1) as u32 - 1).leading_zeros();
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8; // level 0: SMT
                    }
                    1 => {
                        e.eax = core_shift;
                        e.ebx = cpus as u32;
                        e.ecx = (2 << 8) | 1; // level 1: core
                    }
                    n => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = n; // invalid level: the end of the list
                    }
                }
                e.edx = id as u32; // x2APIC id
            }
            0xa => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            _ => {}
        }
    }
    c
}

/// MSRs a kernel expects sane at entry (as Firecracker and Cloud
/// Hypervisor set them).
fn boot_msrs() -> Vec<kvm_msr_entry> {
    let e = |index: u32, data: u64| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        e(0x174, 0),             // IA32_SYSENTER_CS
        e(0x175, 0),             // IA32_SYSENTER_ESP
        e(0x176, 0),             // IA32_SYSENTER_EIP
        e(0xc000_0081, 0),       // STAR
        e(0xc000_0082, 0),       // LSTAR
        e(0xc000_0083, 0),       // CSTAR
        e(0xc000_0084, 0),       // SYSCALL_MASK
        e(0xc000_0102, 0),       // KERNEL_GS_BASE
        e(0x10, 0),              // TSC
        e(0x1a0, 1),             // MISC_ENABLE: fast strings
        e(0x2ff, (1 << 11) | 6), // MTRRdefType: MTRRs on, write-back
    ]
}

/// A GDT descriptor from its flags (access byte and granularity nibble),
/// base and limit.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The kvm_segment a selector of `entry` at GDT `index` loads.
pub fn segment(entry: u64, index: u16) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: if present == 1 { 0 } else { 1 },
        padding: 0,
    }
}

/// The boot GDT for an entry protocol: null, code, data, TSS.
pub fn boot_gdt(entry: Entry) -> [u64; 4] {
    match entry {
        Entry::Linux64(_) => [
            0,
            gdt_entry(0xa09b, 0, 0xfffff), // 64-bit code
            gdt_entry(0xc093, 0, 0xfffff), // data
            gdt_entry(0x808b, 0, 0xfffff), // TSS
        ],
        Entry::Pvh(_) => [
            0,
            gdt_entry(0xc09b, 0, 0xfffff), // 32-bit flat code
            gdt_entry(0xc093, 0, 0xfffff), // data
            gdt_entry(0x008b, 0, 0x67),    // TSS
        ],
    }
}

/// Identity-maps the low 4 GiB with 2 MiB pages for a 64-bit entry.
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), CpuError> {
    mem.write_obj(layout::PDPT_ADDR | 0x3, GuestAddress(layout::PML4_ADDR))?;
    for gib in 0..layout::IDENTITY_MAPPED_GIB {
        let pd = layout::PD_ADDR + gib * 0x1000;
        mem.write_obj(pd | 0x3, GuestAddress(layout::PDPT_ADDR + gib * 8))?;
        let mut entries = [0u8; 4096];
        for (i, e) in entries.chunks_exact_mut(8).enumerate() {
            let addr = ((gib << 30) | ((i as u64) << 21)) | 0x83; // present, writable, 2 MiB
            e.copy_from_slice(&addr.to_le_bytes());
        }
        mem.write_slice(&entries, GuestAddress(pd))?;
    }
    Ok(())
}

/// What every vCPU gets: CPUID, MSRs, FPU, LAPIC wiring.
pub fn setup_common(vcpu: &VcpuFd, cpuid: &CpuId) -> Result<(), CpuError> {
    vcpu.set_cpuid2(cpuid).map_err(kvm("set CPUID"))?;
    let entries = boot_msrs();
    let msrs = Msrs::from_entries(&entries)
        .map_err(|_| CpuError::Kvm("set MSRs", kvm_ioctls::Error::new(libc::EINVAL)))?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm("set MSRs"))?;
    if set != entries.len() {
        // KVM stops at the first MSR it refuses; a kernel does without the rest.
        tracing::debug!("KVM set {set} of {} boot MSRs", entries.len());
    }
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("set FPU"))?;
    // LINT0 delivers the 8259's ExtINT, LINT1 NMIs, as firmware leaves them.
    let mut lapic = vcpu.get_lapic().map_err(kvm("get LAPIC"))?;
    for (reg, mode) in [(0x350usize, 7u32), (0x360, 4)] {
        let mut b = [0u8; 4];
        for (i, x) in b.iter_mut().enumerate() {
            *x = lapic.regs[reg + i] as u8;
        }
        let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
        for (i, x) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = *x as _;
        }
    }
    vcpu.set_lapic(&lapic).map_err(kvm("set LAPIC"))?;
    Ok(())
}

/// Registers of the boot vCPU for `entry` (the others wait for INIT/SIPI).
pub fn setup_boot_cpu(vcpu: &VcpuFd, mem: &GuestMemoryMmap, entry: Entry) -> Result<(), CpuError> {
    let gdt = boot_gdt(entry);
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(layout::GDT_ADDR + i as u64 * 8))?;
    }
    mem.write_obj(0u64, GuestAddress(layout::IDT_ADDR))?;
    let mut sregs = vcpu.get_sregs().map_err(kvm("get special registers"))?;
    let code = segment(gdt[1], 1);
    let data = segment(gdt[2], 2);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(gdt[3], 3);
    sregs.gdt.base = layout::GDT_ADDR;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = layout::IDT_ADDR;
    sregs.idt.limit = 7;
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match entry {
        Entry::Linux64(rip) => {
            write_page_tables(mem)?;
            sregs.cr3 = layout::PML4_ADDR;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG | X86_CR0_ET;
            sregs.efer |= EFER_LME | EFER_LMA;
            regs.rip = rip;
            regs.rsp = layout::BOOT_STACK;
            regs.rbp = layout::BOOT_STACK;
            regs.rsi = layout::ZERO_PAGE_ADDR;
        }
        Entry::Pvh(rip) => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = rip;
            regs.rbx = layout::PVH_INFO_ADDR;
        }
    }
    vcpu.set_sregs(&sregs)
        .map_err(kvm("set special registers"))?;
    vcpu.set_regs(&regs).map_err(kvm("set registers"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let code = segment(gdt_entry(0xa09b, 0, 0xfffff), 1);
        assert_eq!(
            (code.selector, code.l, code.db, code.g, code.present),
            (8, 1, 0, 1, 1)
        );
        assert_eq!(
            (code.base, code.limit, code.type_, code.s),
            (0, 0xffff_ffff, 0xb, 1)
        );
        let data = segment(gdt_entry(0xc093, 0, 0xfffff), 2);
        assert_eq!((data.selector, data.db, data.l, data.type_), (16, 1, 0, 3));
        let code32 = segment(boot_gdt(Entry::Pvh(0))[1], 1);
        assert_eq!((code32.l, code32.db), (0, 1));
        let tss = segment(boot_gdt(Entry::Pvh(0))[3], 3);
        assert_eq!((tss.limit, tss.g, tss.type_), (0x67, 0, 0xb));
        assert_eq!(segment(0, 0).unusable, 1);
    }

    #[test]
    fn page_tables_identity_map_four_gib() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_page_tables(&mem).unwrap();
        let r = |a: u64| mem.read_obj::<u64>(GuestAddress(a)).unwrap();
        assert_eq!(r(layout::PML4_ADDR), layout::PDPT_ADDR | 3);
        assert_eq!(r(layout::PDPT_ADDR + 3 * 8), (layout::PD_ADDR + 0x3000) | 3);
        // The virtio-mmio window at 0xd000_0000: GiB 3, 2 MiB page 128.
        assert_eq!(r(layout::PD_ADDR + 0x3000 + 128 * 8), 0xd000_0000 | 0x83);
        assert_eq!(r(layout::PD_ADDR + 511 * 8), (511 << 21) | 0x83);
    }

    #[test]
    fn cpuid_carries_apic_ids() {
        let base = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xff00_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                ebx: 2,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ebx: 64,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xa,
                eax: 0x0703_0802,
                ..Default::default()
            },
        ])
        .unwrap();
        let c = cpuid_for(&base, 3, 4);
        let e = c.as_slice();
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_eq!(e[0].ebx & 0xffff, 0x0800);
        assert_ne!(e[0].ecx & (1 << 31), 0);
        assert_ne!(e[0].edx & (1 << 28), 0);
        assert_eq!((e[1].edx, e[1].ebx, e[1].ecx), (3, 1, 0x100));
        assert_eq!((e[2].edx, e[2].eax, e[2].ebx, e[2].ecx), (3, 2, 4, 0x201));
        assert_eq!(e[3].eax, 0);
    }
}
