//! Golden vectors for the command stream and the escape formats.

use super::bytes::{b, hex};
use crate::abi::D3dkmtHandle;
use crate::cmdstream::*;
use crate::escape::*;
use crate::ntstatus::NtStatus;

#[test]
fn command_stream_golden() {
    let stream = CommandStream {
        commands: vec![
            Command::Fill {
                dst_va: 0x1000,
                size: 0x100,
                value: 0xdead_beef,
            },
            Command::Copy {
                src_va: 0x1000,
                dst_va: 0x2000,
                size: 0x100,
            },
            Command::Dispatch {
                pipeline: 1,
                group_counts: [4, 1, 1],
                bindings: vec![
                    Binding {
                        binding: 0,
                        read_only: true,
                        va: 0x1000,
                        size: 0x100,
                    },
                    Binding {
                        binding: 1,
                        read_only: false,
                        va: 0x2000,
                        size: 0x100,
                    },
                ],
            },
            Command::Timestamp { dst_va: 0x3000 },
            Command::FenceWait {
                sync_object: D3dkmtHandle(0x401),
                value: 1,
            },
            Command::FenceSignal {
                sync_object: D3dkmtHandle(0x401),
                value: 2,
            },
            Command::Upload {
                va: 0x4000,
                size: 0x2000,
            },
        ],
    };
    let total = 16 + 32 + 32 + (32 + 2 * 24) + 16 + 24 + 24 + 24;
    let expected = b()
        .raw(b"DXCS")
        .u16(1)
        .u16(0)
        .u32(total)
        .u32(7)
        // FILL
        .u16(2)
        .u16(0)
        .u32(32)
        .u64(0x1000)
        .u64(0x100)
        .u32(0xdead_beef)
        .u32(0)
        // COPY
        .u16(1)
        .u16(0)
        .u32(32)
        .u64(0x1000)
        .u64(0x2000)
        .u64(0x100)
        // DISPATCH + 2 bindings
        .u16(3)
        .u16(0)
        .u32(80)
        .u32(1)
        .u32(2)
        .u32(4)
        .u32(1)
        .u32(1)
        .u32(0)
        .u32(0)
        .u32(1)
        .u64(0x1000)
        .u64(0x100)
        .u32(1)
        .u32(0)
        .u64(0x2000)
        .u64(0x100)
        // TIMESTAMP
        .u16(4)
        .u16(0)
        .u32(16)
        .u64(0x3000)
        // FENCE_WAIT, FENCE_SIGNAL
        .u16(6)
        .u16(0)
        .u32(24)
        .u32(0x401)
        .u32(0)
        .u64(1)
        .u16(5)
        .u16(0)
        .u32(24)
        .u32(0x401)
        .u32(0)
        .u64(2)
        // UPLOAD
        .u16(7)
        .u16(0)
        .u32(24)
        .u64(0x4000)
        .u64(0x2000)
        .done();
    assert_eq!(stream.encode(), expected);
    assert_eq!(CommandStream::decode(&expected).unwrap(), stream);

    let empty = CommandStream::default();
    assert_eq!(
        empty.encode(),
        hex("44 58 43 53 01 00 00 00 10 00 00 00 00 00 00 00")
    );
    assert_eq!(CommandStream::decode(&empty.encode()).unwrap(), empty);
}

#[test]
fn escape_golden() {
    let req = EscapeRequest::CreatePipeline(CreatePipeline {
        language: ShaderLanguage::Wgsl,
        source: b"@compute".to_vec(),
        entry_point: "main".into(),
        error_capacity: 8,
    });
    let expected = b()
        .raw(b"DXES")
        .u16(1)
        .u16(1)
        .u32(16 + 24 + 8 + 4 + 8)
        .u32(0)
        .u32(0)
        .u32(1)
        .u32(8)
        .u32(4)
        .u32(8)
        .u32(0)
        .raw(b"@compute")
        .raw(b"main")
        .pad(8)
        .done();
    assert_eq!(req.encode(), expected);
    assert_eq!(EscapeRequest::decode(&expected).unwrap(), req);

    // The host's answer: status, pipeline and error text (cut to capacity).
    let resp = EscapeResponse {
        status: NtStatus::INVALID_PARAMETER,
        pipeline: 0,
        error: "error: expected".into(),
    };
    let out = resp.encode_into_request(&expected).unwrap();
    let mut want = expected.clone();
    want[12..16].copy_from_slice(&0xC000_000Du32.to_le_bytes());
    want[36..40].copy_from_slice(&8u32.to_le_bytes());
    want[52..60].copy_from_slice(b"error: e");
    assert_eq!(out, want);
    let back = EscapeResponse::decode(&out).unwrap();
    assert_eq!(back.status, NtStatus::INVALID_PARAMETER);
    assert_eq!(back.error, "error: e");

    let ok = EscapeResponse {
        status: NtStatus::SUCCESS,
        pipeline: 3,
        error: String::new(),
    };
    let out = ok.encode_into_request(&expected).unwrap();
    assert_eq!(&out[16..20], &3u32.to_le_bytes());
    assert_eq!(EscapeResponse::decode(&out).unwrap(), ok);

    let destroy = EscapeRequest::DestroyPipeline { pipeline: 3 };
    let bytes = b()
        .raw(b"DXES")
        .u16(1)
        .u16(2)
        .u32(24)
        .u32(0)
        .u32(3)
        .u32(0)
        .done();
    assert_eq!(destroy.encode(), bytes);
    assert_eq!(EscapeRequest::decode(&bytes).unwrap(), destroy);
}

#[test]
fn umd_info_golden() {
    let mut info = DxgvUmdAdapterInfo {
        magic: DXGV_UMD_INFO_MAGIC,
        version: DXGV_UMD_INFO_VERSION,
        vendor_id: 0x10de,
        device_id: 0x2330,
        device_type: device_type::DISCRETE_GPU,
        max_bindings: 8,
        max_buffer_size: 1 << 32,
        max_workgroups_per_dimension: 65535,
        max_invocations_per_workgroup: 256,
        min_storage_buffer_offset_alignment: 256,
        _pad0: 0,
        name: [0; 128],
    };
    info.set_name("NVIDIA H100 80GB HBM3");
    let bytes = b()
        .raw(b"DXUI")
        .u32(1)
        .u32(0x10de)
        .u32(0x2330)
        .u32(2)
        .u32(8)
        .u64(1 << 32)
        .u32(65535)
        .u32(256)
        .u32(256)
        .u32(0)
        .raw(b"NVIDIA H100 80GB HBM3")
        .pad(128 - 21)
        .done();
    assert_eq!(zerocopy::IntoBytes::as_bytes(&info), bytes.as_slice());
    let back = DxgvUmdAdapterInfo::decode(&bytes).unwrap();
    assert_eq!(back.name(), "NVIDIA H100 80GB HBM3");
    assert!(DxgvUmdAdapterInfo::decode(&bytes[..100]).is_err());
}
