//! Driver-private data formats: the ESCAPE payloads that create and destroy
//! compute pipelines, and the adapter description QUERYADAPTERINFO returns
//! for `KMTQAITYPE_UMDRIVERPRIVATE`.
//!
//! An escape's private data goes to the host and comes back the same size
//! (dxgkrnl copies the host's bytes over the caller's buffer), so each
//! escape is one in/out buffer: the guest fills the request fields and
//! leaves room for the answer, the host writes status, results and, for
//! pipelines, the compiler's error text into the same layout.

use serde::{Deserialize, Serialize};
use zerocopy::{FromBytes, IntoBytes};

use crate::error::{DecodeError, Reader};
use crate::layout::wire_struct;
use crate::ntstatus::NtStatus;

/// "DXES" in little-endian byte order.
pub const DXGV_ESCAPE_MAGIC: u32 = u32::from_le_bytes(*b"DXES");
/// Escape format version.
pub const DXGV_ESCAPE_VERSION: u16 = 1;
/// Longest entry point name.
pub const MAX_ENTRY_POINT: u32 = 256;
/// Most bytes of compiler error text the host returns.
pub const MAX_ERROR_TEXT: u32 = 16 * 1024;

/// Escape operations.
pub mod escape_op {
    pub const CREATE_PIPELINE: u16 = 1;
    pub const DESTROY_PIPELINE: u16 = 2;
}

/// Shader languages CREATE_PIPELINE accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u32)]
pub enum ShaderLanguage {
    Wgsl = 1,
    SpirV = 2,
}

impl ShaderLanguage {
    fn from_u32(v: u32) -> Result<Self, DecodeError> {
        match v {
            1 => Ok(ShaderLanguage::Wgsl),
            2 => Ok(ShaderLanguage::SpirV),
            v => Err(DecodeError::InvalidValue {
                what: "shader language",
                value: v.into(),
            }),
        }
    }
}

wire_struct! {
    /// Header of every dxvmm escape.
    #[repr(C)]
    pub struct DxgvEscapeHeader [16] {
        /// [`DXGV_ESCAPE_MAGIC`].
        pub magic: u32 => 0,
        /// [`DXGV_ESCAPE_VERSION`].
        pub version: u16 => 4,
        /// One of [`escape_op`].
        pub op: u16 => 6,
        /// Bytes of the whole escape buffer, this header included.
        pub size: u32 => 8,
        /// Out: the operation's NTSTATUS. In: 0.
        pub status: NtStatus => 12,
    }
}

wire_struct! {
    /// CREATE_PIPELINE body, followed by `source_size` bytes of shader
    /// (UTF-8 WGSL, or SPIR-V words), `entry_point_size` bytes of UTF-8
    /// entry point name, and `error_capacity` bytes the host may fill with
    /// compiler messages.
    #[repr(C)]
    pub struct DxgvEscapeCreatePipeline [24] {
        /// Out: the pipeline handle DISPATCH names (non-zero on success).
        pub pipeline: u32 => 0,
        /// [`ShaderLanguage`].
        pub language: u32 => 4,
        pub source_size: u32 => 8,
        pub entry_point_size: u32 => 12,
        pub error_capacity: u32 => 16,
        /// Out: bytes of error text written.
        pub error_size: u32 => 20,
    }
}

wire_struct! {
    /// DESTROY_PIPELINE body.
    #[repr(C)]
    pub struct DxgvEscapeDestroyPipeline [8] {
        pub pipeline: u32 => 0,
        pub _pad0: u32 => 4,
    }
}

/// CREATE_PIPELINE's inputs, decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatePipeline {
    pub language: ShaderLanguage,
    pub source: Vec<u8>,
    pub entry_point: String,
    pub error_capacity: u32,
}

/// An escape request, decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EscapeRequest {
    CreatePipeline(CreatePipeline),
    DestroyPipeline { pipeline: u32 },
}

/// What the host wrote back into an escape buffer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscapeResponse {
    pub status: NtStatus,
    /// CREATE_PIPELINE: the new pipeline (0 on failure).
    pub pipeline: u32,
    /// CREATE_PIPELINE: compiler messages (empty on success).
    pub error: String,
}

fn header(op: u16, size: usize) -> DxgvEscapeHeader {
    DxgvEscapeHeader {
        magic: DXGV_ESCAPE_MAGIC,
        version: DXGV_ESCAPE_VERSION,
        op,
        size: size as u32,
        status: NtStatus::SUCCESS,
    }
}

fn parse_header(r: &mut Reader<'_>, total: usize) -> Result<DxgvEscapeHeader, DecodeError> {
    let h: DxgvEscapeHeader = r.read()?;
    if h.magic != DXGV_ESCAPE_MAGIC {
        return Err(DecodeError::BadMagic {
            what: "escape",
            found: h.magic,
        });
    }
    if h.version != DXGV_ESCAPE_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            what: "escape",
            found: h.version.into(),
            supported: DXGV_ESCAPE_VERSION.into(),
        });
    }
    if h.size as usize != total {
        return Err(DecodeError::InvalidValue {
            what: "escape size",
            value: h.size.into(),
        });
    }
    Ok(h)
}

impl EscapeRequest {
    /// Encodes the request, with room for the host's answer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            EscapeRequest::CreatePipeline(p) => {
                let size = DxgvEscapeHeader::SIZE
                    + DxgvEscapeCreatePipeline::SIZE
                    + p.source.len()
                    + p.entry_point.len()
                    + p.error_capacity as usize;
                out.extend_from_slice(header(escape_op::CREATE_PIPELINE, size).as_bytes());
                out.extend_from_slice(
                    DxgvEscapeCreatePipeline {
                        pipeline: 0,
                        language: p.language as u32,
                        source_size: p.source.len() as u32,
                        entry_point_size: p.entry_point.len() as u32,
                        error_capacity: p.error_capacity,
                        error_size: 0,
                    }
                    .as_bytes(),
                );
                out.extend_from_slice(&p.source);
                out.extend_from_slice(p.entry_point.as_bytes());
                out.resize(size, 0);
            }
            EscapeRequest::DestroyPipeline { pipeline } => {
                let size = DxgvEscapeHeader::SIZE + DxgvEscapeDestroyPipeline::SIZE;
                out.extend_from_slice(header(escape_op::DESTROY_PIPELINE, size).as_bytes());
                out.extend_from_slice(
                    DxgvEscapeDestroyPipeline {
                        pipeline: *pipeline,
                        _pad0: 0,
                    }
                    .as_bytes(),
                );
            }
        }
        out
    }

    /// Decodes and validates an escape buffer from the guest.
    pub fn decode(bytes: &[u8]) -> Result<EscapeRequest, DecodeError> {
        let mut r = Reader::new(bytes, "escape");
        let h = parse_header(&mut r, bytes.len())?;
        if h.status != NtStatus::SUCCESS {
            return Err(DecodeError::InvalidValue {
                what: "escape request status",
                value: h.status.bits().into(),
            });
        }
        let req = match h.op {
            escape_op::CREATE_PIPELINE => {
                let b: DxgvEscapeCreatePipeline = r.read()?;
                let language = ShaderLanguage::from_u32(b.language)?;
                if b.source_size == 0
                    || (language == ShaderLanguage::SpirV && !b.source_size.is_multiple_of(4))
                {
                    return Err(DecodeError::InvalidValue {
                        what: "shader source size",
                        value: b.source_size.into(),
                    });
                }
                if b.entry_point_size == 0 || b.entry_point_size > MAX_ENTRY_POINT {
                    return Err(DecodeError::InvalidValue {
                        what: "entry point size",
                        value: b.entry_point_size.into(),
                    });
                }
                if b.error_capacity > MAX_ERROR_TEXT {
                    return Err(DecodeError::CountTooLarge {
                        what: "error capacity",
                        count: b.error_capacity.into(),
                        max: MAX_ERROR_TEXT.into(),
                    });
                }
                let source = r.bytes(b.source_size as usize)?.to_vec();
                let entry_point = core::str::from_utf8(r.bytes(b.entry_point_size as usize)?)
                    .map_err(|e| DecodeError::InvalidValue {
                        what: "entry point UTF-8",
                        value: e.valid_up_to() as u64,
                    })?
                    .to_owned();
                // The error area is output space; its input contents are ignored.
                r.bytes(b.error_capacity as usize)?;
                EscapeRequest::CreatePipeline(CreatePipeline {
                    language,
                    source,
                    entry_point,
                    error_capacity: b.error_capacity,
                })
            }
            escape_op::DESTROY_PIPELINE => {
                let b: DxgvEscapeDestroyPipeline = r.read()?;
                EscapeRequest::DestroyPipeline {
                    pipeline: b.pipeline,
                }
            }
            op => {
                return Err(DecodeError::InvalidValue {
                    what: "escape op",
                    value: op.into(),
                })
            }
        };
        r.finish()?;
        Ok(req)
    }
}

impl EscapeResponse {
    /// Writes the host's answer into a copy of the request buffer `request`
    /// (which must have decoded). Error text longer than the caller's
    /// capacity is cut at a character boundary.
    pub fn encode_into_request(&self, request: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let decoded = EscapeRequest::decode(request)?;
        let mut out = request.to_vec();
        let mut h: DxgvEscapeHeader = Reader::new(&out, "escape").read()?;
        h.status = self.status;
        out[..DxgvEscapeHeader::SIZE].copy_from_slice(h.as_bytes());
        if let EscapeRequest::CreatePipeline(p) = decoded {
            let mut text = self.error.as_str();
            let cap = p.error_capacity as usize;
            if text.len() > cap {
                let mut cut = cap;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text = &text[..cut];
            }
            let body_at = DxgvEscapeHeader::SIZE;
            let mut b: DxgvEscapeCreatePipeline =
                Reader::new(&out[body_at..], "escape body").read()?;
            b.pipeline = self.pipeline;
            b.error_size = text.len() as u32;
            out[body_at..body_at + DxgvEscapeCreatePipeline::SIZE].copy_from_slice(b.as_bytes());
            let err_at =
                body_at + DxgvEscapeCreatePipeline::SIZE + p.source.len() + p.entry_point.len();
            out[err_at..err_at + cap].fill(0);
            out[err_at..err_at + text.len()].copy_from_slice(text.as_bytes());
        }
        Ok(out)
    }

    /// Reads the host's answer from an escape buffer (guest side).
    pub fn decode(bytes: &[u8]) -> Result<EscapeResponse, DecodeError> {
        let mut r = Reader::new(bytes, "escape reply");
        let h = parse_header(&mut r, bytes.len())?;
        let mut resp = EscapeResponse {
            status: h.status,
            pipeline: 0,
            error: String::new(),
        };
        match h.op {
            escape_op::CREATE_PIPELINE => {
                let b: DxgvEscapeCreatePipeline = r.read()?;
                r.bytes(b.source_size as usize)?;
                r.bytes(b.entry_point_size as usize)?;
                let area = r.bytes(b.error_capacity as usize)?;
                let text = area
                    .get(..b.error_size as usize)
                    .ok_or(DecodeError::InvalidValue {
                        what: "error size",
                        value: b.error_size.into(),
                    })?;
                resp.pipeline = b.pipeline;
                // Compiler text is for people; a bad byte should not hide it.
                resp.error = String::from_utf8_lossy(text).into_owned();
            }
            escape_op::DESTROY_PIPELINE => {
                let _: DxgvEscapeDestroyPipeline = r.read()?;
            }
            op => {
                return Err(DecodeError::InvalidValue {
                    what: "escape op",
                    value: op.into(),
                })
            }
        }
        r.finish()?;
        Ok(resp)
    }
}

/// "DXUI" in little-endian byte order.
pub const DXGV_UMD_INFO_MAGIC: u32 = u32::from_le_bytes(*b"DXUI");
pub const DXGV_UMD_INFO_VERSION: u32 = 1;

/// Device types in [`DxgvUmdAdapterInfo::device_type`] (wgpu's list).
pub mod device_type {
    pub const OTHER: u32 = 0;
    pub const INTEGRATED_GPU: u32 = 1;
    pub const DISCRETE_GPU: u32 = 2;
    pub const VIRTUAL_GPU: u32 = 3;
    pub const CPU: u32 = 4;
}

wire_struct! {
    /// Answer to QUERYADAPTERINFO with `KMTQAITYPE_UMDRIVERPRIVATE`: what
    /// the guest's user-mode driver needs to know about the host GPU.
    #[repr(C)]
    pub struct DxgvUmdAdapterInfo [176] {
        /// [`DXGV_UMD_INFO_MAGIC`].
        pub magic: u32 => 0,
        pub version: u32 => 4,
        pub vendor_id: u32 => 8,
        pub device_id: u32 => 12,
        /// [`device_type`].
        pub device_type: u32 => 16,
        /// Most bindings per DISPATCH the backend supports.
        pub max_bindings: u32 => 20,
        pub max_buffer_size: u64 => 24,
        pub max_workgroups_per_dimension: u32 => 32,
        pub max_invocations_per_workgroup: u32 => 36,
        /// Binding ranges must start at a multiple of this.
        pub min_storage_buffer_offset_alignment: u32 => 40,
        pub _pad0: u32 => 44,
        /// UTF-8 adapter name, NUL-padded.
        #[serde(with = "crate::layout::big_array")]
        pub name: [u8; 128] => 48,
    }
}

impl DxgvUmdAdapterInfo {
    /// The adapter name up to its first NUL.
    pub fn name(&self) -> String {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name.len());
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    /// Sets the name, cut to fit (at a character boundary) with a NUL after.
    pub fn set_name(&mut self, name: &str) {
        let mut cut = name.len().min(self.name.len() - 1);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        self.name = [0; 128];
        self.name[..cut].copy_from_slice(&name.as_bytes()[..cut]);
    }

    /// Reads and checks the info from QUERYADAPTERINFO's answer.
    pub fn decode(bytes: &[u8]) -> Result<DxgvUmdAdapterInfo, DecodeError> {
        let (info, _) =
            DxgvUmdAdapterInfo::read_from_prefix(bytes).map_err(|_| DecodeError::Truncated {
                what: "adapter info",
                need: DxgvUmdAdapterInfo::SIZE,
                have: bytes.len(),
            })?;
        if info.magic != DXGV_UMD_INFO_MAGIC {
            return Err(DecodeError::BadMagic {
                what: "adapter info",
                found: info.magic,
            });
        }
        if info.version != DXGV_UMD_INFO_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                what: "adapter info",
                found: info.version,
                supported: DXGV_UMD_INFO_VERSION,
            });
        }
        Ok(info)
    }
}

/// dxvmm's own QUERYADAPTERINFO types, far above d3dkmthk's
/// `KMTQUERYADAPTERINFOTYPE` values so they never meet a real one. The
/// guest driver forwards them like any other type.
pub mod qai_type {
    /// [`super::DxgvHostAdapterInfo`]: the host adapter as `dxvmm gpus`
    /// describes it.
    pub const HOST_ADAPTER: u32 = 0x4458_0001;
    /// [`super::DxgvHostObjects`]: how many host objects this VM owns now
    /// (for tests and tracing: a process that died must leave none).
    pub const HOST_OBJECTS: u32 = 0x4458_0002;
}

/// "DXHA" in little-endian byte order.
pub const DXGV_HOST_ADAPTER_MAGIC: u32 = u32::from_le_bytes(*b"DXHA");
pub const DXGV_HOST_ADAPTER_VERSION: u32 = 1;
/// "DXHO" in little-endian byte order.
pub const DXGV_HOST_OBJECTS_MAGIC: u32 = u32::from_le_bytes(*b"DXHO");
pub const DXGV_HOST_OBJECTS_VERSION: u32 = 1;

wire_struct! {
    /// Answer to QUERYADAPTERINFO with [`qai_type::HOST_ADAPTER`]. Strings
    /// are UTF-8, NUL-padded, cut at a character boundary to fit.
    #[repr(C)]
    pub struct DxgvHostAdapterInfo [456] {
        /// [`DXGV_HOST_ADAPTER_MAGIC`].
        pub magic: u32 => 0,
        pub version: u32 => 4,
        pub luid: crate::abi::WinLuid => 8,
        pub vendor_id: u32 => 16,
        pub device_id: u32 => 20,
        /// [`device_type`].
        pub device_type: u32 => 24,
        /// 1 for a software adapter (lavapipe).
        pub software: u32 => 28,
        /// Bytes of allocations the guest may make on it (all processes).
        pub memory_bytes: u64 => 32,
        /// Graphics API on the host ("vulkan").
        pub backend: [u8; 32] => 40,
        #[serde(with = "crate::layout::big_array")]
        pub driver: [u8; 128] => 72,
        #[serde(with = "crate::layout::big_array")]
        pub driver_info: [u8; 128] => 200,
        #[serde(with = "crate::layout::big_array")]
        pub name: [u8; 128] => 328,
    }
}

wire_struct! {
    /// Answer to QUERYADAPTERINFO with [`qai_type::HOST_OBJECTS`]: live host
    /// objects of the whole VM, all adapters together.
    #[repr(C)]
    pub struct DxgvHostObjects [48] {
        /// [`DXGV_HOST_OBJECTS_MAGIC`].
        pub magic: u32 => 0,
        pub version: u32 => 4,
        pub processes: u32 => 8,
        pub adapters: u32 => 12,
        pub devices: u32 => 16,
        pub contexts: u32 => 20,
        pub allocations: u32 => 24,
        pub sync_objects: u32 => 28,
        pub paging_queues: u32 => 32,
        pub hw_queues: u32 => 36,
        pub pipelines: u32 => 40,
        pub _pad0: u32 => 44,
    }
}

/// Copies `s` into a NUL-padded field, cut at a character boundary so that
/// at least one NUL remains.
pub fn put_str(field: &mut [u8], s: &str) {
    field.fill(0);
    let mut cut = s.len().min(field.len().saturating_sub(1));
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    field[..cut].copy_from_slice(&s.as_bytes()[..cut]);
}

/// The string in a NUL-padded field, up to its first NUL.
pub fn get_str(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Reads a magic- and version-tagged answer of a dxvmm adapter query
/// (whose first two `u32`s are its magic and version) and checks both.
fn decode_tagged<T>(
    bytes: &[u8],
    what: &'static str,
    magic: u32,
    version: u32,
) -> Result<T, DecodeError>
where
    T: zerocopy::FromBytes + zerocopy::KnownLayout + zerocopy::Immutable,
{
    let (v, _) = T::read_from_prefix(bytes).map_err(|_| DecodeError::Truncated {
        what,
        need: core::mem::size_of::<T>(),
        have: bytes.len(),
    })?;
    let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or([0; 4]));
    if word(0) != magic {
        return Err(DecodeError::BadMagic {
            what,
            found: word(0),
        });
    }
    if word(4) != version {
        return Err(DecodeError::UnsupportedVersion {
            what,
            found: word(4),
            supported: version,
        });
    }
    Ok(v)
}

impl DxgvHostAdapterInfo {
    /// Reads and checks the info from QUERYADAPTERINFO's answer.
    pub fn decode(bytes: &[u8]) -> Result<DxgvHostAdapterInfo, DecodeError> {
        decode_tagged(
            bytes,
            "host adapter info",
            DXGV_HOST_ADAPTER_MAGIC,
            DXGV_HOST_ADAPTER_VERSION,
        )
    }
}

impl DxgvHostObjects {
    /// Reads and checks the counts from QUERYADAPTERINFO's answer.
    pub fn decode(bytes: &[u8]) -> Result<DxgvHostObjects, DecodeError> {
        decode_tagged(
            bytes,
            "host object counts",
            DXGV_HOST_OBJECTS_MAGIC,
            DXGV_HOST_OBJECTS_VERSION,
        )
    }
}

#[cfg(test)]
mod host_info_tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn host_adapter_info_round_trips_and_strings_fit() {
        let mut info = DxgvHostAdapterInfo {
            magic: DXGV_HOST_ADAPTER_MAGIC,
            version: DXGV_HOST_ADAPTER_VERSION,
            luid: crate::abi::WinLuid { a: 7, b: 9 },
            vendor_id: 0x10de,
            device_id: 0x2330,
            device_type: device_type::DISCRETE_GPU,
            software: 0,
            memory_bytes: 80 << 30,
            backend: [0; 32],
            driver: [0; 128],
            driver_info: [0; 128],
            name: [0; 128],
        };
        put_str(&mut info.backend, "vulkan");
        put_str(&mut info.name, &"é".repeat(100));
        let bytes = info.as_bytes().to_vec();
        let back = DxgvHostAdapterInfo::decode(&bytes).unwrap();
        assert_eq!(get_str(&back.backend), "vulkan");
        // 127 bytes of room: 63 two-byte characters.
        assert_eq!(get_str(&back.name), "é".repeat(63));
        assert!(DxgvHostAdapterInfo::decode(&bytes[..100]).is_err());
        let mut bad = bytes.clone();
        bad[0] = 0;
        assert!(DxgvHostAdapterInfo::decode(&bad).is_err());
        let counts = DxgvHostObjects {
            magic: DXGV_HOST_OBJECTS_MAGIC,
            version: DXGV_HOST_OBJECTS_VERSION,
            processes: 3,
            ..Default::default()
        };
        assert_eq!(
            DxgvHostObjects::decode(counts.as_bytes())
                .unwrap()
                .processes,
            3
        );
    }
}

/// Flags of [`DxgvAllocationDesc::flags`].
pub mod alloc_flags {
    /// The CPU reaches the allocation: it is backed by guest pages
    /// (SETEXISTINGSYSMEMPAGES) and can be locked.
    pub const CPU_VISIBLE: u32 = 1 << 0;
    pub const KNOWN: u32 = CPU_VISIBLE;
}

/// Largest alignment an allocation may ask for.
pub const MAX_ALLOCATION_ALIGNMENT: u32 = 64 * 1024;

wire_struct! {
    /// The private driver data of one allocation in CREATEALLOCATION (the
    /// `priv_drv_data` of its `d3dddi_allocationinfo2`): what dxvmm's
    /// user-mode driver asks the host for.
    #[repr(C)]
    pub struct DxgvAllocationDesc [16] {
        /// Bytes; non-zero, a multiple of 4.
        pub size: u64 => 0,
        /// 0, or a power of two up to [`MAX_ALLOCATION_ALIGNMENT`].
        pub alignment: u32 => 8,
        /// [`alloc_flags`].
        pub flags: u32 => 12,
    }
}

impl DxgvAllocationDesc {
    /// Reads and checks one allocation's private data.
    pub fn decode(bytes: &[u8]) -> Result<DxgvAllocationDesc, DecodeError> {
        if bytes.len() != DxgvAllocationDesc::SIZE {
            return Err(DecodeError::Truncated {
                what: "allocation description",
                need: DxgvAllocationDesc::SIZE,
                have: bytes.len(),
            });
        }
        let (d, _) =
            DxgvAllocationDesc::read_from_prefix(bytes).map_err(|_| DecodeError::Truncated {
                what: "allocation description",
                need: DxgvAllocationDesc::SIZE,
                have: bytes.len(),
            })?;
        if d.size == 0 || d.size % 4 != 0 {
            return Err(DecodeError::InvalidValue {
                what: "allocation size",
                value: d.size,
            });
        }
        if d.alignment != 0
            && (!d.alignment.is_power_of_two() || d.alignment > MAX_ALLOCATION_ALIGNMENT)
        {
            return Err(DecodeError::InvalidValue {
                what: "allocation alignment",
                value: d.alignment.into(),
            });
        }
        if d.flags & !alloc_flags::KNOWN != 0 {
            return Err(DecodeError::InvalidValue {
                what: "allocation flags",
                value: d.flags.into(),
            });
        }
        Ok(d)
    }
}

#[cfg(test)]
mod allocation_desc_tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn allocation_desc_checks_its_fields() {
        let good = DxgvAllocationDesc {
            size: 4096,
            alignment: 256,
            flags: alloc_flags::CPU_VISIBLE,
        };
        assert_eq!(DxgvAllocationDesc::decode(good.as_bytes()).unwrap(), good);
        for bad in [
            DxgvAllocationDesc { size: 0, ..good },
            DxgvAllocationDesc { size: 6, ..good },
            DxgvAllocationDesc {
                alignment: 3,
                ..good
            },
            DxgvAllocationDesc {
                alignment: 1 << 20,
                ..good
            },
            DxgvAllocationDesc { flags: 2, ..good },
        ] {
            assert!(
                DxgvAllocationDesc::decode(bad.as_bytes()).is_err(),
                "{bad:?}"
            );
        }
        assert!(DxgvAllocationDesc::decode(&good.as_bytes()[..8]).is_err());
        assert!(DxgvAllocationDesc::decode(&[0u8; 24]).is_err());
    }
}
