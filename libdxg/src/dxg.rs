//! The open `/dev/dxg` file and the calls on it.
//!
//! Three levels, from the bottom:
//! - [`Dxg::ioctl_cmd`] / [`Dxg::ioctl_raw`]: any command word, any pointer
//!   (unsafe; for tests that hand the driver garbage);
//! - [`Dxg::ioctl`] / [`Dxg::call`]: one argument struct of the protocol
//!   crate, its command word derived from its type;
//! - D3DKMT-style calls that take handles as plain values (so a test can pass
//!   a closed or foreign handle) and check what the driver answers.
//!
//! The RAII wrappers ([`crate::Adapter`], [`crate::Device`]) sit on the last.

use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use dxvmm_protocol::abi::{
    kmtqaitype, D3dkmtAdapterInfo, D3dkmtAdapterType, D3dkmtCloseAdapter, D3dkmtCreateDevice,
    D3dkmtCreateDeviceFlags, D3dkmtDestroyDevice, D3dkmtEnumAdapters2, D3dkmtEnumAdapters3,
    D3dkmtEnumAdaptersFilter, D3dkmtHandle, D3dkmtOpenAdapterFromLuid, D3dkmtQueryAdapterInfo,
    D3dkmtQueryVideoMemoryInfo, WinLuid, D3DKMT_ADAPTERS_MAX,
};
use dxvmm_protocol::escape::{qai_type, DxgvHostAdapterInfo, DxgvHostObjects, DxgvUmdAdapterInfo};
use zerocopy::IntoBytes;

use crate::error::{Errno, Error, Result};
use crate::ioctl::{dxg_cmd, nr_name, IoctlArg, PlainArg};

/// Where the driver's device node is.
pub const DXG_PATH: &str = "/dev/dxg";

/// An open `/dev/dxg`. Closing it (drop) ends the process's use of the
/// driver only when no other file of the process is open.
#[derive(Debug)]
pub struct Dxg {
    file: File,
}

/// QUERYVIDEOMEMORYINFO's answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VideoMemoryInfo {
    pub budget: u64,
    pub current_usage: u64,
    pub current_reservation: u64,
    pub available_for_reservation: u64,
}

impl Dxg {
    /// Opens [`DXG_PATH`].
    pub fn open() -> Result<Dxg> {
        Dxg::open_path(DXG_PATH)
    }

    /// Opens the driver at `path`.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Dxg> {
        let path = path.as_ref();
        // std opens with O_CLOEXEC: a forked-and-exec'd child must not
        // inherit this process's driver state.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Dxg { file })
    }

    /// Issues command word `cmd` with argument pointer `arg`. Returns the
    /// ioctl's non-negative result (dxgkrnl passes through positive NTSTATUS
    /// values such as `STATUS_PENDING`).
    ///
    /// # Safety
    ///
    /// The driver may write through `arg` (as many bytes as `cmd` encodes)
    /// and through every user pointer inside what `arg` points to. Each of
    /// them must either be unusable by the kernel (null, unmapped, kernel
    /// addresses: the call then fails with `EFAULT`) or point to memory that
    /// nothing else uses and that may hold any bytes afterwards.
    pub unsafe fn ioctl_cmd(&self, cmd: u32, arg: *mut c_void) -> Result<i32> {
        // SAFETY: the fd is open for the lifetime of `self`; what the kernel
        // does with `arg` is the caller's contract above.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), cmd as _, arg) };
        if rc < 0 {
            return Err(Error::Ioctl {
                ioctl: ioctl_label(cmd),
                cmd,
                errno: Errno::last(),
            });
        }
        Ok(rc)
    }

    /// Issues `/dev/dxg` ioctl `nr` with `size` encoded in the command word,
    /// whether or not that is the size of the ioctl's struct.
    ///
    /// # Safety
    ///
    /// As [`Dxg::ioctl_cmd`].
    pub unsafe fn ioctl_raw(&self, nr: u32, size: usize, arg: *mut c_void) -> Result<i32> {
        let cmd = dxg_cmd(nr, size).ok_or(Error::BadArgument {
            ioctl: nr_name(nr).unwrap_or("unknown ioctl"),
            what: "number or size does not fit an ioctl command word",
        })?;
        // SAFETY: forwarded to the caller.
        unsafe { self.ioctl_cmd(cmd, arg) }
    }

    /// Issues the ioctl that `T` is the argument of.
    ///
    /// # Safety
    ///
    /// The user pointers inside `arg` must satisfy [`Dxg::ioctl_cmd`]'s
    /// contract; the struct itself is valid for any bytes the driver writes.
    pub unsafe fn ioctl<T: IoctlArg>(&self, arg: &mut T) -> Result<i32> {
        // SAFETY: `arg` is a live, exclusive `T` of exactly the size in
        // T::CMD, and `T: FromBytes`; its inner pointers are the caller's.
        unsafe { self.ioctl_cmd(T::CMD, arg.as_mut_bytes().as_mut_ptr().cast()) }
    }

    /// [`Dxg::ioctl`] for arguments without user pointers: always safe.
    pub fn call<T: PlainArg>(&self, arg: &mut T) -> Result<i32> {
        // SAFETY: a PlainArg carries no user pointer; the driver touches the
        // struct only, which is valid for any bytes.
        unsafe { self.ioctl(arg) }
    }

    /// ENUMADAPTERS2: the adapters, each opened (its handle must be closed
    /// with CLOSEADAPTER; [`crate::Adapter`] does that).
    pub fn enum_adapters2_raw(&self) -> Result<Vec<D3dkmtAdapterInfo>> {
        let mut list = vec![D3dkmtAdapterInfo::default(); D3DKMT_ADAPTERS_MAX as usize];
        let mut arg = D3dkmtEnumAdapters2 {
            num_adapters: D3DKMT_ADAPTERS_MAX,
            reserved: 0,
            adapters: list.as_mut_ptr() as u64,
        };
        // SAFETY: `adapters` points to `num_adapters` entries we own, of a
        // FromBytes type.
        unsafe { self.ioctl(&mut arg)? };
        trim_list::<D3dkmtEnumAdapters2>(list, arg.num_adapters)
    }

    /// ENUMADAPTERS3 with `filter`; as [`Dxg::enum_adapters2_raw`].
    pub fn enum_adapters3_raw(
        &self,
        filter: D3dkmtEnumAdaptersFilter,
    ) -> Result<Vec<D3dkmtAdapterInfo>> {
        let mut list = vec![D3dkmtAdapterInfo::default(); D3DKMT_ADAPTERS_MAX as usize];
        let mut arg = D3dkmtEnumAdapters3 {
            filter,
            adapter_count: D3DKMT_ADAPTERS_MAX,
            reserved: 0,
            adapters: list.as_mut_ptr() as u64,
        };
        // SAFETY: as in enum_adapters2_raw.
        unsafe { self.ioctl(&mut arg)? };
        trim_list::<D3dkmtEnumAdapters3>(list, arg.adapter_count)
    }

    /// OPENADAPTERFROMLUID: a new handle for the adapter `luid` names.
    pub fn open_adapter_from_luid_raw(&self, luid: WinLuid) -> Result<D3dkmtHandle> {
        let mut arg = D3dkmtOpenAdapterFromLuid {
            adapter_luid: luid,
            adapter_handle: D3dkmtHandle::NULL,
        };
        self.call(&mut arg)?;
        non_null::<D3dkmtOpenAdapterFromLuid>(arg.adapter_handle)
    }

    /// CLOSEADAPTER on any handle value.
    pub fn close_adapter_raw(&self, adapter: D3dkmtHandle) -> Result<()> {
        self.call(&mut D3dkmtCloseAdapter {
            adapter_handle: adapter,
        })?;
        Ok(())
    }

    /// QUERYADAPTERINFO of `ty` into `buf` (all of it is offered to the
    /// driver).
    pub fn query_adapter_info(&self, adapter: D3dkmtHandle, ty: u32, buf: &mut [u8]) -> Result<()> {
        let size = u32::try_from(buf.len()).map_err(|_| Error::BadArgument {
            ioctl: D3dkmtQueryAdapterInfo::NAME,
            what: "buffer larger than 4 GiB",
        })?;
        let mut arg = D3dkmtQueryAdapterInfo {
            adapter,
            r#type: ty,
            private_data: buf.as_mut_ptr() as u64,
            private_data_size: size,
            _pad0: 0,
        };
        // SAFETY: `private_data` is `buf`, ours for `size` bytes of any value.
        unsafe { self.ioctl(&mut arg)? };
        Ok(())
    }

    /// dxvmm's UMD description of the host GPU (`KMTQAITYPE_UMDRIVERPRIVATE`).
    pub fn query_umd_info(&self, adapter: D3dkmtHandle) -> Result<DxgvUmdAdapterInfo> {
        let mut buf = [0u8; DxgvUmdAdapterInfo::SIZE];
        self.query_adapter_info(adapter, kmtqaitype::UMDRIVERPRIVATE, &mut buf)?;
        DxgvUmdAdapterInfo::decode(&buf).map_err(qai_decode)
    }

    /// The host adapter as `dxvmm gpus` describes it.
    pub fn query_host_adapter(&self, adapter: D3dkmtHandle) -> Result<DxgvHostAdapterInfo> {
        let mut buf = [0u8; DxgvHostAdapterInfo::SIZE];
        self.query_adapter_info(adapter, qai_type::HOST_ADAPTER, &mut buf)?;
        DxgvHostAdapterInfo::decode(&buf).map_err(qai_decode)
    }

    /// Live host objects of the whole VM.
    pub fn query_host_objects(&self, adapter: D3dkmtHandle) -> Result<DxgvHostObjects> {
        let mut buf = [0u8; DxgvHostObjects::SIZE];
        self.query_adapter_info(adapter, qai_type::HOST_OBJECTS, &mut buf)?;
        DxgvHostObjects::decode(&buf).map_err(qai_decode)
    }

    /// The `d3dkmt_adaptertype` flag word (`KMTQAITYPE_ADAPTERTYPE`).
    pub fn query_adapter_type(&self, adapter: D3dkmtHandle) -> Result<D3dkmtAdapterType> {
        let mut word = D3dkmtAdapterType::default();
        self.query_adapter_info(adapter, kmtqaitype::ADAPTERTYPE, word.as_mut_bytes())?;
        Ok(word)
    }

    /// CREATEDEVICE on adapter handle `adapter`: the new device's handle.
    pub fn create_device_raw(
        &self,
        adapter: D3dkmtHandle,
        flags: D3dkmtCreateDeviceFlags,
    ) -> Result<D3dkmtHandle> {
        // The command buffer and list pointers are legacy (WDDM 1.x) outputs
        // that dxgkrnl never fills; they stay null.
        let mut arg = D3dkmtCreateDevice {
            adapter,
            flags,
            ..Default::default()
        };
        // SAFETY: every user pointer in the argument is null.
        unsafe { self.ioctl(&mut arg)? };
        non_null::<D3dkmtCreateDevice>(arg.device)
    }

    /// DESTROYDEVICE on any handle value.
    pub fn destroy_device_raw(&self, device: D3dkmtHandle) -> Result<()> {
        self.call(&mut D3dkmtDestroyDevice { device })?;
        Ok(())
    }

    /// QUERYVIDEOMEMORYINFO for this process on `adapter`.
    pub fn query_video_memory_info_raw(
        &self,
        adapter: D3dkmtHandle,
        segment_group: u32,
        physical_adapter_index: u32,
    ) -> Result<VideoMemoryInfo> {
        let mut arg = D3dkmtQueryVideoMemoryInfo {
            adapter,
            memory_segment_group: segment_group,
            physical_adapter_index,
            ..Default::default()
        };
        self.call(&mut arg)?;
        Ok(VideoMemoryInfo {
            budget: arg.budget,
            current_usage: arg.current_usage,
            current_reservation: arg.current_reservation,
            available_for_reservation: arg.available_for_reservation,
        })
    }
}

impl AsFd for Dxg {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// The name errors give a command word: the ioctl its number is, when its
/// type byte is ours.
fn ioctl_label(cmd: u32) -> &'static str {
    if (cmd >> 8) & 0xff == crate::ioctl::DXG_IOCTL_TYPE {
        nr_name(cmd & 0xff).unwrap_or("unknown ioctl")
    } else {
        "unknown ioctl"
    }
}

/// Keeps the first `count` entries the driver says it wrote, refusing a
/// count larger than the room it was given.
fn trim_list<T: IoctlArg>(
    mut list: Vec<D3dkmtAdapterInfo>,
    count: u32,
) -> Result<Vec<D3dkmtAdapterInfo>> {
    if count as usize > list.len() {
        return Err(Error::BadAnswer {
            ioctl: T::NAME,
            what: format!("{count} adapters for room for {}", list.len()),
        });
    }
    list.truncate(count as usize);
    Ok(list)
}

/// A handle a successful create/open returned; null is a driver bug.
fn non_null<T: IoctlArg>(handle: D3dkmtHandle) -> Result<D3dkmtHandle> {
    if handle.is_null() {
        return Err(Error::BadAnswer {
            ioctl: T::NAME,
            what: "success with a null handle".into(),
        });
    }
    Ok(handle)
}

fn qai_decode(source: dxvmm_protocol::DecodeError) -> Error {
    Error::Decode {
        ioctl: D3dkmtQueryAdapterInfo::NAME,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_node_is_a_typed_not_found() {
        let err = Dxg::open_path("/nonexistent/dxg").unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().starts_with("/nonexistent/dxg: "), "{err}");
    }

    #[test]
    fn ioctls_on_another_file_fail_with_enotty() {
        // /dev/null answers every ioctl with ENOTTY: the error path end to
        // end, without the driver.
        let null = Dxg::open_path("/dev/null").unwrap();
        let err = null.close_adapter_raw(D3dkmtHandle(1)).unwrap_err();
        assert_eq!(err.errno(), Some(Errno(libc::ENOTTY)));
        assert!(
            err.to_string()
                .starts_with("LX_DXCLOSEADAPTER (0xc0044715) failed: ENOTTY"),
            "{err}"
        );
        let err = null.enum_adapters3_raw(Default::default()).unwrap_err();
        assert!(err.to_string().starts_with("LX_DXENUMADAPTERS3"), "{err}");
        let mut buf = [0u8; 8];
        let err = null
            .query_adapter_info(D3dkmtHandle(1), 0, &mut buf)
            .unwrap_err();
        assert!(
            err.to_string().starts_with("LX_DXQUERYADAPTERINFO"),
            "{err}"
        );
        // SAFETY: a null argument pointer; /dev/null does not look at it.
        let err = unsafe { null.ioctl_raw(0x03, 8, std::ptr::null_mut()) }.unwrap_err();
        assert!(
            err.to_string().starts_with("unknown ioctl (0xc0084703)"),
            "{err}"
        );
        // SAFETY: as above.
        let err = unsafe { null.ioctl_raw(0x14, 1 << 14, std::ptr::null_mut()) }.unwrap_err();
        assert!(matches!(err, Error::BadArgument { .. }), "{err}");
    }

    #[test]
    fn driver_answers_are_checked() {
        let list = vec![D3dkmtAdapterInfo::default(); 4];
        let err = trim_list::<D3dkmtEnumAdapters2>(list.clone(), 5).unwrap_err();
        assert!(
            err.to_string()
                .contains("LX_DXENUMADAPTERS2: the driver's answer is malformed: 5 adapters"),
            "{err}"
        );
        assert_eq!(trim_list::<D3dkmtEnumAdapters2>(list, 2).unwrap().len(), 2);
        assert!(non_null::<D3dkmtCreateDevice>(D3dkmtHandle::NULL).is_err());
        let err = qai_decode(DxgvHostObjects::decode(&[0; 48]).unwrap_err());
        assert!(
            err.to_string().starts_with("LX_DXQUERYADAPTERINFO"),
            "{err}"
        );
    }
}
