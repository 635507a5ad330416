//! ioctl command words, and which argument struct goes with which number.
//!
//! Every `/dev/dxg` ioctl is `_IOWR('G', nr, struct)`: the command word
//! carries the argument's size, and the driver refuses a word whose size does
//! not match its struct. The words are computed here from the sizes of the
//! protocol crate's structs, so a layout change shows up as a different
//! command word rather than as a silent mismatch. The unit tests check them
//! against the protocol crate's table and against the literal values of
//! WSL 2's header.

use dxvmm_protocol::abi::*;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The ioctl type byte of `/dev/dxg` ('G').
pub const DXG_IOCTL_TYPE: u32 = 0x47;

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// Largest argument size an ioctl command word can carry.
pub const MAX_IOCTL_SIZE: usize = (1 << IOC_SIZEBITS) - 1;

/// Linux's `_IOWR(ty, nr, size)` (the asm-generic encoding x86 and arm64
/// use), or `None` when a part does not fit its field. Tests use it to build
/// words with deliberately wrong sizes.
pub const fn iowr(ty: u32, nr: u32, size: usize) -> Option<u32> {
    if ty >= 1 << IOC_TYPEBITS || nr >= 1 << IOC_NRBITS || size > MAX_IOCTL_SIZE {
        return None;
    }
    Some(
        ((IOC_READ | IOC_WRITE) << IOC_DIRSHIFT)
            | ((size as u32) << IOC_SIZESHIFT)
            | (ty << IOC_TYPESHIFT)
            | (nr << IOC_NRSHIFT),
    )
}

/// The `/dev/dxg` command word for `nr` with an argument of `size` bytes.
pub const fn dxg_cmd(nr: u32, size: usize) -> Option<u32> {
    iowr(DXG_IOCTL_TYPE, nr, size)
}

/// The number field of a command word.
pub const fn cmd_nr(cmd: u32) -> u32 {
    (cmd >> IOC_NRSHIFT) & ((1 << IOC_NRBITS) - 1)
}

/// The size field of a command word.
pub const fn cmd_size(cmd: u32) -> usize {
    ((cmd >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)) as usize
}

/// The name of a `/dev/dxg` ioctl number, whatever size its word carries
/// (so errors for deliberately mis-sized words still name the ioctl).
pub fn nr_name(nr: u32) -> Option<&'static str> {
    IOCTL_TABLE
        .iter()
        .find(|(_, n, _)| *n == nr)
        .map(|(name, _, _)| *name)
}

/// An ioctl argument struct: the number it goes with and its name.
///
/// The kernel reads the struct and writes it back; `FromBytes` makes any
/// bytes it writes a valid value.
pub trait IoctlArg: IntoBytes + FromBytes + KnownLayout + Immutable + Sized {
    /// The ioctl number (the `nr` of `_IOWR`).
    const NR: u32;
    /// The ioctl's name in WSL 2's header (`LX_DX...`).
    const NAME: &'static str;
    /// The command word.
    const CMD: u32 = match dxg_cmd(Self::NR, core::mem::size_of::<Self>()) {
        Some(cmd) => cmd,
        None => panic!("ioctl argument larger than the size field"),
    };
}

/// An argument that carries no user pointers: the driver touches nothing but
/// the struct itself, so passing any value of it is memory-safe.
pub trait PlainArg: IoctlArg {}

macro_rules! dxg_ioctls {
    ($( $ty:ident = ($nr:expr, $name:ident $(, $plain:ident)?); )*) => {
        $(
            impl IoctlArg for $ty {
                const NR: u32 = $nr;
                const NAME: &'static str = stringify!($name);
            }
            $( dxg_ioctls!(@$plain $ty); )?
        )*

        /// Every ioctl libdxg knows: (name, number, argument size).
        pub const IOCTL_TABLE: &[(&str, u32, usize)] = &[
            $( (stringify!($name), $nr, core::mem::size_of::<$ty>()), )*
        ];
    };
    (@plain $ty:ident) => {
        impl PlainArg for $ty {}
    };
}

// The whole table the driver serves, so that later calls (allocations,
// contexts, submission, fences, LOCK2) only add their wrappers. `plain`
// marks arguments without user pointers.
dxg_ioctls! {
    D3dkmtOpenAdapterFromLuid = (0x01, LX_DXOPENADAPTERFROMLUID, plain);
    D3dkmtCreateDevice = (0x02, LX_DXCREATEDEVICE);
    D3dkmtCreateContextVirtual = (0x04, LX_DXCREATECONTEXTVIRTUAL);
    D3dkmtDestroyContext = (0x05, LX_DXDESTROYCONTEXT, plain);
    D3dkmtCreateAllocation = (0x06, LX_DXCREATEALLOCATION);
    D3dkmtCreatePagingQueue = (0x07, LX_DXCREATEPAGINGQUEUE);
    D3dddiReserveGpuVirtualAddress = (0x08, LX_DXRESERVEGPUVIRTUALADDRESS);
    D3dkmtQueryAdapterInfo = (0x09, LX_DXQUERYADAPTERINFO);
    D3dkmtQueryVideoMemoryInfo = (0x0a, LX_DXQUERYVIDEOMEMORYINFO, plain);
    D3dddiMakeResident = (0x0b, LX_DXMAKERESIDENT);
    D3dddiMapGpuVirtualAddress = (0x0c, LX_DXMAPGPUVIRTUALADDRESS);
    D3dkmtEscape = (0x0d, LX_DXESCAPE);
    D3dkmtGetDeviceState = (0x0e, LX_DXGETDEVICESTATE);
    D3dkmtSubmitCommand = (0x0f, LX_DXSUBMITCOMMAND);
    D3dkmtCreateSynchronizationObject2 = (0x10, LX_DXCREATESYNCHRONIZATIONOBJECT);
    D3dkmtDestroyAllocation2 = (0x13, LX_DXDESTROYALLOCATION2);
    D3dkmtEnumAdapters2 = (0x14, LX_DXENUMADAPTERS2);
    D3dkmtCloseAdapter = (0x15, LX_DXCLOSEADAPTER, plain);
    D3dkmtCreateHwQueue = (0x18, LX_DXCREATEHWQUEUE);
    D3dkmtDestroyDevice = (0x19, LX_DXDESTROYDEVICE, plain);
    D3dkmtDestroyHwQueue = (0x1b, LX_DXDESTROYHWQUEUE, plain);
    D3dddiDestroyPagingQueue = (0x1c, LX_DXDESTROYPAGINGQUEUE, plain);
    D3dkmtDestroySynchronizationObject = (0x1d, LX_DXDESTROYSYNCHRONIZATIONOBJECT, plain);
    D3dkmtEvict = (0x1e, LX_DXEVICT);
    D3dkmtFreeGpuVirtualAddress = (0x20, LX_DXFREEGPUVIRTUALADDRESS);
    D3dkmtLock2 = (0x25, LX_DXLOCK2);
    D3dkmtOpenSynchronizationObject = (0x29, LX_DXOPENSYNCHRONIZATIONOBJECT);
    D3dkmtQueryAllocationResidency = (0x2a, LX_DXQUERYALLOCATIONRESIDENCY);
    D3dkmtQueryResourceInfo = (0x2b, LX_DXQUERYRESOURCEINFO);
    D3dkmtSetAllocationPriority = (0x2e, LX_DXSETALLOCATIONPRIORITY);
    D3dkmtSignalSynchronizationObjectFromCpu = (0x31, LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMCPU);
    D3dkmtSignalSynchronizationObjectFromGpu = (0x32, LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU);
    D3dkmtSignalSynchronizationObjectFromGpu2 = (0x33, LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU2);
    D3dkmtSubmitCommandToHwQueue = (0x34, LX_DXSUBMITCOMMANDTOHWQUEUE);
    D3dkmtUnlock2 = (0x37, LX_DXUNLOCK2, plain);
    D3dkmtWaitForSynchronizationObjectFromCpu = (0x3a, LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMCPU);
    D3dkmtWaitForSynchronizationObjectFromGpu = (0x3b, LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMGPU);
    D3dkmtGetAllocationPriority = (0x3c, LX_DXGETALLOCATIONPRIORITY);
    D3dkmtEnumAdapters3 = (0x3e, LX_DXENUMADAPTERS3);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_match_the_protocol_table() {
        assert_eq!(IOCTL_TABLE.len(), IOCTLS.len());
        for &(name, nr, size) in IOCTL_TABLE {
            let (_, cmd, psize) = IOCTLS
                .iter()
                .find(|(n, _, _)| *n == name)
                .unwrap_or_else(|| panic!("{name} missing from protocol::abi::IOCTLS"));
            assert_eq!(dxg_cmd(nr, size), Some(*cmd), "{name}");
            assert_eq!(size, *psize, "{name}");
            assert_eq!(cmd_nr(*cmd), nr, "{name}");
            assert_eq!(cmd_size(*cmd), size, "{name}");
        }
    }

    #[test]
    fn words_match_wsl_header_values() {
        // _IOWR('G', nr, sizeof(struct)) as a C compiler computes them.
        assert_eq!(D3dkmtOpenAdapterFromLuid::CMD, 0xc00c_4701);
        assert_eq!(D3dkmtCreateDevice::CMD, 0xc040_4702);
        assert_eq!(D3dkmtQueryAdapterInfo::CMD, 0xc018_4709);
        assert_eq!(D3dkmtQueryVideoMemoryInfo::CMD, 0xc038_470a);
        assert_eq!(D3dkmtEnumAdapters2::CMD, 0xc010_4714);
        assert_eq!(D3dkmtCloseAdapter::CMD, 0xc004_4715);
        assert_eq!(D3dkmtDestroyDevice::CMD, 0xc004_4719);
        assert_eq!(D3dkmtEnumAdapters3::CMD, 0xc018_473e);
        assert_eq!(D3dkmtSubmitCommand::CMD, 0xc180_470f);
    }

    #[test]
    fn struct_sizes_are_the_documented_ones() {
        use core::mem::size_of;
        assert_eq!(size_of::<D3dkmtAdapterInfo>(), 20);
        assert_eq!(size_of::<D3dkmtEnumAdapters2>(), 16);
        assert_eq!(size_of::<D3dkmtEnumAdapters3>(), 24);
        assert_eq!(size_of::<D3dkmtOpenAdapterFromLuid>(), 12);
        assert_eq!(size_of::<D3dkmtCloseAdapter>(), 4);
        assert_eq!(size_of::<D3dkmtQueryAdapterInfo>(), 24);
        assert_eq!(size_of::<D3dkmtQueryVideoMemoryInfo>(), 56);
        assert_eq!(size_of::<D3dkmtCreateDevice>(), 64);
        assert_eq!(size_of::<D3dkmtDestroyDevice>(), 4);
    }

    #[test]
    fn encoding_refuses_what_does_not_fit() {
        assert_eq!(dxg_cmd(0x14, MAX_IOCTL_SIZE + 1), None);
        assert_eq!(dxg_cmd(0x100, 4), None);
        assert_eq!(iowr(0x100, 1, 4), None);
        let cmd = dxg_cmd(0xff, MAX_IOCTL_SIZE).unwrap();
        assert_eq!((cmd_nr(cmd), cmd_size(cmd)), (0xff, MAX_IOCTL_SIZE));
        assert_eq!(nr_name(0x3e), Some("LX_DXENUMADAPTERS3"));
        assert_eq!(nr_name(0x03), None);
    }
}
