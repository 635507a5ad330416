//! Adapters and devices as owned objects: closed or destroyed on drop.

use std::mem::ManuallyDrop;

use dxvmm_protocol::abi::{
    memory_segment_group, D3dkmtAdapterInfo, D3dkmtAdapterType, D3dkmtCreateDeviceFlags,
    D3dkmtEnumAdaptersFilter, D3dkmtHandle, WinLuid,
};
use dxvmm_protocol::escape::{DxgvHostAdapterInfo, DxgvHostObjects, DxgvUmdAdapterInfo};

use crate::dxg::{Dxg, VideoMemoryInfo};
use crate::error::Result;

/// An open adapter handle; CLOSEADAPTER on drop.
#[derive(Debug)]
pub struct Adapter<'d> {
    dxg: &'d Dxg,
    info: D3dkmtAdapterInfo,
}

impl Dxg {
    /// Every adapter, in ENUMADAPTERS3 order (the default first), opened.
    /// dxvmm's adapters are compute-only, so the filter includes those.
    pub fn adapters(&self) -> Result<Vec<Adapter<'_>>> {
        let list = self.enum_adapters3_raw(D3dkmtEnumAdaptersFilter::INCLUDE_COMPUTE_ONLY)?;
        Ok(list
            .into_iter()
            .map(|info| Adapter { dxg: self, info })
            .collect())
    }

    /// Opens the adapter `luid` names.
    pub fn open_adapter(&self, luid: WinLuid) -> Result<Adapter<'_>> {
        let handle = self.open_adapter_from_luid_raw(luid)?;
        Ok(Adapter {
            dxg: self,
            info: D3dkmtAdapterInfo {
                adapter_handle: handle,
                adapter_luid: luid,
                ..Default::default()
            },
        })
    }
}

impl<'d> Adapter<'d> {
    /// Takes ownership of a handle this process opened on `dxg`.
    pub fn from_raw(dxg: &'d Dxg, info: D3dkmtAdapterInfo) -> Adapter<'d> {
        Adapter { dxg, info }
    }

    /// Gives up ownership: the handle stays open.
    pub fn into_raw(self) -> D3dkmtAdapterInfo {
        ManuallyDrop::new(self).info
    }

    pub fn handle(&self) -> D3dkmtHandle {
        self.info.adapter_handle
    }

    pub fn luid(&self) -> WinLuid {
        self.info.adapter_luid
    }

    /// Video present sources (0 on dxvmm: compute only). Not known for an
    /// adapter opened by LUID.
    pub fn num_sources(&self) -> u32 {
        self.info.num_sources
    }

    /// The file the adapter was opened on.
    pub fn dxg(&self) -> &'d Dxg {
        self.dxg
    }

    /// CLOSEADAPTER, reporting its error (drop ignores it).
    pub fn close(self) -> Result<()> {
        let this = ManuallyDrop::new(self);
        this.dxg.close_adapter_raw(this.info.adapter_handle)
    }

    /// QUERYADAPTERINFO of `ty` into `buf`.
    pub fn query_info(&self, ty: u32, buf: &mut [u8]) -> Result<()> {
        self.dxg.query_adapter_info(self.handle(), ty, buf)
    }

    pub fn umd_info(&self) -> Result<DxgvUmdAdapterInfo> {
        self.dxg.query_umd_info(self.handle())
    }

    pub fn host_adapter(&self) -> Result<DxgvHostAdapterInfo> {
        self.dxg.query_host_adapter(self.handle())
    }

    pub fn host_objects(&self) -> Result<DxgvHostObjects> {
        self.dxg.query_host_objects(self.handle())
    }

    pub fn adapter_type(&self) -> Result<D3dkmtAdapterType> {
        self.dxg.query_adapter_type(self.handle())
    }

    /// This process's use of the adapter's local memory.
    pub fn video_memory_info(&self) -> Result<VideoMemoryInfo> {
        self.dxg
            .query_video_memory_info_raw(self.handle(), memory_segment_group::LOCAL, 0)
    }

    /// CREATEDEVICE. The device borrows the adapter, so it is destroyed
    /// before the adapter is closed.
    pub fn create_device(&self) -> Result<Device<'_>> {
        let handle = self
            .dxg
            .create_device_raw(self.handle(), D3dkmtCreateDeviceFlags::default())?;
        Ok(Device {
            dxg: self.dxg,
            handle,
        })
    }
}

impl Drop for Adapter<'_> {
    fn drop(&mut self) {
        // Nothing to tell anyone: the driver closes what is left when the
        // file closes anyway.
        let _ = self.dxg.close_adapter_raw(self.info.adapter_handle);
    }
}

/// A device handle; DESTROYDEVICE on drop.
#[derive(Debug)]
pub struct Device<'a> {
    dxg: &'a Dxg,
    handle: D3dkmtHandle,
}

impl<'a> Device<'a> {
    /// Takes ownership of a device handle this process created on `dxg`.
    pub fn from_raw(dxg: &'a Dxg, handle: D3dkmtHandle) -> Device<'a> {
        Device { dxg, handle }
    }

    /// Gives up ownership: the device stays alive.
    pub fn into_raw(self) -> D3dkmtHandle {
        ManuallyDrop::new(self).handle
    }

    pub fn handle(&self) -> D3dkmtHandle {
        self.handle
    }

    pub fn dxg(&self) -> &'a Dxg {
        self.dxg
    }

    /// DESTROYDEVICE, reporting its error (drop ignores it).
    pub fn destroy(self) -> Result<()> {
        let this = ManuallyDrop::new(self);
        this.dxg.destroy_device_raw(this.handle)
    }
}

impl Drop for Device<'_> {
    fn drop(&mut self) {
        let _ = self.dxg.destroy_device_raw(self.handle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Errno;

    #[test]
    fn owners_report_release_errors_and_let_go_on_into_raw() {
        // /dev/null refuses every ioctl: what close/destroy report is the
        // driver's answer, and dropping an owner must not panic.
        let null = Dxg::open_path("/dev/null").unwrap();
        let info = D3dkmtAdapterInfo {
            adapter_handle: D3dkmtHandle(0x40),
            ..Default::default()
        };
        let err = Adapter::from_raw(&null, info).close().unwrap_err();
        assert_eq!(err.errno(), Some(Errno(libc::ENOTTY)));
        assert!(err.to_string().starts_with("LX_DXCLOSEADAPTER"), "{err}");
        let adapter = Adapter::from_raw(&null, info);
        assert!(adapter.host_objects().is_err());
        assert!(adapter.create_device().is_err());
        assert_eq!(adapter.into_raw().adapter_handle, D3dkmtHandle(0x40));
        let err = Device::from_raw(&null, D3dkmtHandle(0x80))
            .destroy()
            .unwrap_err();
        assert!(err.to_string().starts_with("LX_DXDESTROYDEVICE"), "{err}");
        drop(Device::from_raw(&null, D3dkmtHandle(0x80)));
        assert!(null.adapters().is_err());
    }
}
