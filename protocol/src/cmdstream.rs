//! dxvmm's virtual-GPU command stream: what the command buffer of
//! SUBMITCOMMAND / SUBMITCOMMANDTOHWQUEUE holds.
//!
//! On a real GPU this is the vendor's DMA buffer format, private between its
//! user-mode and kernel-mode drivers. dxvmm's "hardware" is the host backend,
//! so the format is ours: a 16-byte stream header and a sequence of commands,
//! each an 8-byte command header and a fixed body (DISPATCH adds its binding
//! table). Every address is a GPU virtual address in the submitting process's
//! GPU VA space (set up by RESERVE/MAPGPUVIRTUALADDRESS); the backend turns
//! them into buffers and offsets.

use serde::{Deserialize, Serialize};
use zerocopy::IntoBytes;

use crate::abi::D3dkmtHandle;
use crate::error::{check_count, DecodeError, Reader};
use crate::layout::wire_struct;

/// "DXCS" in little-endian byte order.
pub const DXGV_CMDSTREAM_MAGIC: u32 = u32::from_le_bytes(*b"DXCS");
/// Format version; a decoder rejects others.
pub const DXGV_CMDSTREAM_VERSION: u16 = 1;
/// Most commands in one stream.
pub const MAX_COMMANDS: u32 = 4096;
/// Most bindings one DISPATCH may carry (binding slots are 0..MAX_BINDINGS).
pub const MAX_BINDINGS: u32 = 32;
/// Largest workgroup count per dimension (WebGPU's default limit, which
/// every backend dxvmm runs on supports).
pub const MAX_WORKGROUPS_PER_DIMENSION: u32 = 65535;
/// Largest stream (the payload limit of a message bounds nothing here: the
/// stream lives in guest memory, so it gets its own cap).
pub const MAX_STREAM_SIZE: usize = 1 << 20;
/// Alignment of COPY/FILL addresses and sizes and of binding ranges.
pub const COPY_ALIGNMENT: u64 = 4;

/// Command opcodes.
pub mod opcode {
    pub const COPY: u16 = 1;
    pub const FILL: u16 = 2;
    pub const DISPATCH: u16 = 3;
    pub const TIMESTAMP: u16 = 4;
    pub const FENCE_SIGNAL: u16 = 5;
    pub const FENCE_WAIT: u16 = 6;
    pub const UPLOAD: u16 = 7;
}

/// Bits of a binding's `flags`.
pub mod binding_flags {
    /// The shader only reads the range (`var<storage, read>`).
    pub const READ_ONLY: u32 = 1 << 0;
}

wire_struct! {
    /// Stream header.
    #[repr(C)]
    pub struct DxgvCmdStreamHeader [16] {
        /// [`DXGV_CMDSTREAM_MAGIC`].
        pub magic: u32 => 0,
        /// [`DXGV_CMDSTREAM_VERSION`].
        pub version: u16 => 4,
        /// Must be 0.
        pub flags: u16 => 6,
        /// Bytes of the whole stream, this header included; must equal the
        /// submitted command length.
        pub size: u32 => 8,
        pub command_count: u32 => 12,
    }
}

wire_struct! {
    /// Command header.
    #[repr(C)]
    pub struct DxgvCmdHeader [8] {
        /// One of [`opcode`].
        pub opcode: u16 => 0,
        /// Must be 0.
        pub flags: u16 => 2,
        /// Bytes of the command, this header included.
        pub size: u32 => 4,
    }
}

wire_struct! {
    /// COPY: `size` bytes from `src_va` to `dst_va` (ranges must not overlap).
    #[repr(C)]
    pub struct DxgvCmdCopy [32] {
        pub hdr: DxgvCmdHeader => 0,
        pub src_va: u64 => 8,
        pub dst_va: u64 => 16,
        pub size: u64 => 24,
    }
}

wire_struct! {
    /// FILL: `size` bytes at `dst_va` with the 32-bit pattern `value`.
    #[repr(C)]
    pub struct DxgvCmdFill [32] {
        pub hdr: DxgvCmdHeader => 0,
        pub dst_va: u64 => 8,
        pub size: u64 => 16,
        pub value: u32 => 24,
        pub _pad0: u32 => 28,
    }
}

wire_struct! {
    /// DISPATCH: run compute pipeline `pipeline` (from the CREATE_PIPELINE
    /// escape) over the given workgroup grid, followed by `binding_count`
    /// [`DxgvCmdBinding`]s that bind GPU VA ranges to the shader's
    /// `@group(0) @binding(n)` storage buffers.
    #[repr(C)]
    pub struct DxgvCmdDispatch [32] {
        pub hdr: DxgvCmdHeader => 0,
        pub pipeline: u32 => 8,
        pub binding_count: u32 => 12,
        pub group_count_x: u32 => 16,
        pub group_count_y: u32 => 20,
        pub group_count_z: u32 => 24,
        pub _pad0: u32 => 28,
    }
}

wire_struct! {
    /// One DISPATCH binding.
    #[repr(C)]
    pub struct DxgvCmdBinding [24] {
        /// The `@binding(n)` slot, below [`MAX_BINDINGS`], unique per dispatch.
        pub binding: u32 => 0,
        /// [`binding_flags`].
        pub flags: u32 => 4,
        pub va: u64 => 8,
        pub size: u64 => 16,
    }
}

wire_struct! {
    /// TIMESTAMP: write the GPU time in nanoseconds (u64) at `dst_va` once
    /// every earlier command of the stream has completed.
    #[repr(C)]
    pub struct DxgvCmdTimestamp [16] {
        pub hdr: DxgvCmdHeader => 0,
        pub dst_va: u64 => 8,
    }
}

wire_struct! {
    /// FENCE_SIGNAL (set monitored fence `sync_object` to `value` when the
    /// commands before it complete) and FENCE_WAIT (hold the commands after
    /// it until the fence reaches `value`).
    #[repr(C)]
    pub struct DxgvCmdFence [24] {
        pub hdr: DxgvCmdHeader => 0,
        pub sync_object: D3dkmtHandle => 8,
        pub _pad0: u32 => 12,
        pub value: u64 => 16,
    }
}

wire_struct! {
    /// UPLOAD: the GPU takes `[va, va + size)` of a CPU-visible allocation
    /// from its CPU pages now, before the other commands up to the next
    /// fence command, and the process leaves those bytes alone until it
    /// locks the allocation again (docs/protocol.md §2.6). A user-mode
    /// driver writing a large buffer hands it over in pieces this way, so
    /// the GPU copies one piece while the CPU writes the next.
    #[repr(C)]
    pub struct DxgvCmdUpload [24] {
        pub hdr: DxgvCmdHeader => 0,
        pub va: u64 => 8,
        pub size: u64 => 16,
    }
}

/// A DISPATCH binding, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub binding: u32,
    pub read_only: bool,
    pub va: u64,
    pub size: u64,
}

/// One command, decoded and validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Copy {
        src_va: u64,
        dst_va: u64,
        size: u64,
    },
    Fill {
        dst_va: u64,
        size: u64,
        value: u32,
    },
    Dispatch {
        pipeline: u32,
        group_counts: [u32; 3],
        bindings: Vec<Binding>,
    },
    Timestamp {
        dst_va: u64,
    },
    FenceSignal {
        sync_object: D3dkmtHandle,
        value: u64,
    },
    FenceWait {
        sync_object: D3dkmtHandle,
        value: u64,
    },
    Upload {
        va: u64,
        size: u64,
    },
}

/// A whole command stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandStream {
    pub commands: Vec<Command>,
}

fn hdr(op: u16, size: usize) -> DxgvCmdHeader {
    DxgvCmdHeader {
        opcode: op,
        flags: 0,
        size: size as u32,
    }
}

fn invalid(what: &'static str, value: u64) -> DecodeError {
    DecodeError::InvalidValue { what, value }
}

/// Padding must be zero, so that a stream decodes to exactly one meaning
/// and re-encodes to the same bytes (a trace replays what the guest sent).
fn zero_pad(pad: u32) -> Result<(), DecodeError> {
    if pad != 0 {
        return Err(invalid("command padding", pad.into()));
    }
    Ok(())
}

/// Checks a `[va, va + size)` range: non-empty, aligned, no wrap-around.
fn check_range(what: &'static str, va: u64, size: u64, align: u64) -> Result<(), DecodeError> {
    if size == 0 || !size.is_multiple_of(align) {
        return Err(invalid(what, size));
    }
    if !va.is_multiple_of(align) {
        return Err(invalid(what, va));
    }
    va.checked_add(size).ok_or(DecodeError::Overflow(what))?;
    Ok(())
}

impl Command {
    /// Appends the encoded command.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Command::Copy {
                src_va,
                dst_va,
                size,
            } => out.extend_from_slice(
                DxgvCmdCopy {
                    hdr: hdr(opcode::COPY, DxgvCmdCopy::SIZE),
                    src_va: *src_va,
                    dst_va: *dst_va,
                    size: *size,
                }
                .as_bytes(),
            ),
            Command::Fill {
                dst_va,
                size,
                value,
            } => out.extend_from_slice(
                DxgvCmdFill {
                    hdr: hdr(opcode::FILL, DxgvCmdFill::SIZE),
                    dst_va: *dst_va,
                    size: *size,
                    value: *value,
                    _pad0: 0,
                }
                .as_bytes(),
            ),
            Command::Dispatch {
                pipeline,
                group_counts,
                bindings,
            } => {
                let size = DxgvCmdDispatch::SIZE + bindings.len() * DxgvCmdBinding::SIZE;
                out.extend_from_slice(
                    DxgvCmdDispatch {
                        hdr: hdr(opcode::DISPATCH, size),
                        pipeline: *pipeline,
                        binding_count: bindings.len() as u32,
                        group_count_x: group_counts[0],
                        group_count_y: group_counts[1],
                        group_count_z: group_counts[2],
                        _pad0: 0,
                    }
                    .as_bytes(),
                );
                for b in bindings {
                    out.extend_from_slice(
                        DxgvCmdBinding {
                            binding: b.binding,
                            flags: if b.read_only {
                                binding_flags::READ_ONLY
                            } else {
                                0
                            },
                            va: b.va,
                            size: b.size,
                        }
                        .as_bytes(),
                    );
                }
            }
            Command::Timestamp { dst_va } => out.extend_from_slice(
                DxgvCmdTimestamp {
                    hdr: hdr(opcode::TIMESTAMP, DxgvCmdTimestamp::SIZE),
                    dst_va: *dst_va,
                }
                .as_bytes(),
            ),
            Command::FenceSignal { sync_object, value }
            | Command::FenceWait { sync_object, value } => {
                let op = if matches!(self, Command::FenceSignal { .. }) {
                    opcode::FENCE_SIGNAL
                } else {
                    opcode::FENCE_WAIT
                };
                out.extend_from_slice(
                    DxgvCmdFence {
                        hdr: hdr(op, DxgvCmdFence::SIZE),
                        sync_object: *sync_object,
                        _pad0: 0,
                        value: *value,
                    }
                    .as_bytes(),
                );
            }
            Command::Upload { va, size } => out.extend_from_slice(
                DxgvCmdUpload {
                    hdr: hdr(opcode::UPLOAD, DxgvCmdUpload::SIZE),
                    va: *va,
                    size: *size,
                }
                .as_bytes(),
            ),
        }
    }

    /// Decodes and validates one command whose header said `size` bytes.
    fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        let mut r = Reader::new(bytes, "command");
        let h: DxgvCmdHeader = Reader::new(bytes, "command header").read()?;
        if h.flags != 0 {
            return Err(invalid("command flags", h.flags.into()));
        }
        let expect = |n: usize| -> Result<(), DecodeError> {
            if bytes.len() == n {
                Ok(())
            } else {
                Err(invalid("command size", bytes.len() as u64))
            }
        };
        let cmd = match h.opcode {
            opcode::COPY => {
                expect(DxgvCmdCopy::SIZE)?;
                let c: DxgvCmdCopy = r.read()?;
                check_range("copy source", c.src_va, c.size, COPY_ALIGNMENT)?;
                check_range("copy destination", c.dst_va, c.size, COPY_ALIGNMENT)?;
                // Ranges are non-empty and do not wrap (checked above).
                let overlap = c.src_va < c.dst_va + c.size && c.dst_va < c.src_va + c.size;
                if overlap {
                    return Err(invalid("overlapping copy", c.dst_va));
                }
                Command::Copy {
                    src_va: c.src_va,
                    dst_va: c.dst_va,
                    size: c.size,
                }
            }
            opcode::FILL => {
                expect(DxgvCmdFill::SIZE)?;
                let c: DxgvCmdFill = r.read()?;
                zero_pad(c._pad0)?;
                check_range("fill destination", c.dst_va, c.size, COPY_ALIGNMENT)?;
                Command::Fill {
                    dst_va: c.dst_va,
                    size: c.size,
                    value: c.value,
                }
            }
            opcode::DISPATCH => {
                let c: DxgvCmdDispatch = r.read()?;
                zero_pad(c._pad0)?;
                let n = check_count("binding_count", c.binding_count, MAX_BINDINGS)?;
                expect(DxgvCmdDispatch::SIZE + n * DxgvCmdBinding::SIZE)?;
                let groups = [c.group_count_x, c.group_count_y, c.group_count_z];
                for g in groups {
                    check_count("workgroup count", g, MAX_WORKGROUPS_PER_DIMENSION)?;
                }
                let raw: Vec<DxgvCmdBinding> = r.array(n)?;
                let mut seen = 0u64;
                let mut bindings = Vec::with_capacity(n);
                for b in raw {
                    check_count("binding slot", b.binding, MAX_BINDINGS - 1)?;
                    if seen & (1 << b.binding) != 0 {
                        return Err(invalid("duplicate binding slot", b.binding.into()));
                    }
                    seen |= 1 << b.binding;
                    if b.flags & !binding_flags::READ_ONLY != 0 {
                        return Err(invalid("binding flags", b.flags.into()));
                    }
                    check_range("binding range", b.va, b.size, COPY_ALIGNMENT)?;
                    bindings.push(Binding {
                        binding: b.binding,
                        read_only: b.flags & binding_flags::READ_ONLY != 0,
                        va: b.va,
                        size: b.size,
                    });
                }
                Command::Dispatch {
                    pipeline: c.pipeline,
                    group_counts: groups,
                    bindings,
                }
            }
            opcode::TIMESTAMP => {
                expect(DxgvCmdTimestamp::SIZE)?;
                let c: DxgvCmdTimestamp = r.read()?;
                check_range("timestamp destination", c.dst_va, 8, 8)?;
                Command::Timestamp { dst_va: c.dst_va }
            }
            opcode::FENCE_SIGNAL | opcode::FENCE_WAIT => {
                expect(DxgvCmdFence::SIZE)?;
                let c: DxgvCmdFence = r.read()?;
                zero_pad(c._pad0)?;
                if c.sync_object.is_null() {
                    return Err(invalid("fence sync object", 0));
                }
                if h.opcode == opcode::FENCE_SIGNAL {
                    Command::FenceSignal {
                        sync_object: c.sync_object,
                        value: c.value,
                    }
                } else {
                    Command::FenceWait {
                        sync_object: c.sync_object,
                        value: c.value,
                    }
                }
            }
            opcode::UPLOAD => {
                expect(DxgvCmdUpload::SIZE)?;
                let c: DxgvCmdUpload = r.read()?;
                check_range("upload range", c.va, c.size, COPY_ALIGNMENT)?;
                Command::Upload {
                    va: c.va,
                    size: c.size,
                }
            }
            op => return Err(invalid("command opcode", op.into())),
        };
        r.finish()?;
        Ok(cmd)
    }
}

impl CommandStream {
    /// Encodes the stream with its header.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; DxgvCmdStreamHeader::SIZE];
        for c in &self.commands {
            c.encode_into(&mut out);
        }
        let header = DxgvCmdStreamHeader {
            magic: DXGV_CMDSTREAM_MAGIC,
            version: DXGV_CMDSTREAM_VERSION,
            flags: 0,
            size: out.len() as u32,
            command_count: self.commands.len() as u32,
        };
        out[..DxgvCmdStreamHeader::SIZE].copy_from_slice(header.as_bytes());
        out
    }

    /// Decodes and validates a stream read from guest memory: magic,
    /// version, total size, every opcode, size, count, alignment and range.
    pub fn decode(bytes: &[u8]) -> Result<CommandStream, DecodeError> {
        if bytes.len() > MAX_STREAM_SIZE {
            return Err(DecodeError::TooLarge {
                what: "command stream",
                len: bytes.len(),
                max: MAX_STREAM_SIZE,
            });
        }
        let mut r = Reader::new(bytes, "command stream");
        let h: DxgvCmdStreamHeader = r.read()?;
        if h.magic != DXGV_CMDSTREAM_MAGIC {
            return Err(DecodeError::BadMagic {
                what: "command stream",
                found: h.magic,
            });
        }
        if h.version != DXGV_CMDSTREAM_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                what: "command stream",
                found: h.version.into(),
                supported: DXGV_CMDSTREAM_VERSION.into(),
            });
        }
        if h.flags != 0 {
            return Err(invalid("command stream flags", h.flags.into()));
        }
        if h.size as usize != bytes.len() {
            return Err(invalid("command stream size", h.size.into()));
        }
        let count = check_count("command_count", h.command_count, MAX_COMMANDS)?;
        let mut commands = Vec::with_capacity(count.min(r.remaining() / DxgvCmdHeader::SIZE));
        for _ in 0..count {
            let ch: DxgvCmdHeader = Reader::new(r.peek(), "command header").read()?;
            let size = ch.size as usize;
            if size < DxgvCmdHeader::SIZE || !size.is_multiple_of(8) {
                return Err(invalid("command size", size as u64));
            }
            commands.push(Command::decode(r.bytes(size)?)?);
        }
        r.finish()?;
        Ok(CommandStream { commands })
    }
}
