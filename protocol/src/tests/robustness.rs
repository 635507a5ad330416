//! Decoders given truncated, oversized or garbage input: they return an
//! error and never panic.

use proptest::prelude::*;

use super::roundtrip::{build, build_reply, material, KINDS};
use crate::cmdstream::{CommandStream, DxgvCmdStreamHeader, MAX_BINDINGS};
use crate::error::DecodeError;
use crate::escape::{DxgvUmdAdapterInfo, EscapeRequest, EscapeResponse};
use crate::frame::{encode_frame, Frame, FrameKind, VirtioDxgConfig, MAX_PAYLOAD};
use crate::message::{HostEvent, Reply, Request};
use crate::ntstatus::NtStatus;
use crate::vmbus::*;

/// Runs every decoder in the crate over `bytes`; none may panic.
pub fn decode_everything(bytes: &[u8]) {
    let req = Request::decode(bytes);
    if let Ok(req) = &req {
        // Whatever decodes must re-encode to the same bytes: the decoder
        // accepts no two spellings of one message.
        assert_eq!(req.encode(), bytes);
        let _ = Reply::decode(req, bytes);
    }
    let _ = HostEvent::decode(bytes);
    let _ = CommandStream::decode(bytes);
    let _ = EscapeRequest::decode(bytes);
    let _ = EscapeResponse::decode(bytes);
    let _ = DxgvUmdAdapterInfo::decode(bytes);
    for kind in [FrameKind::Request, FrameKind::Reply, FrameKind::Event] {
        if let Ok(f) = Frame::parse(bytes, kind) {
            let _ = Request::decode(f.payload);
        }
    }
    if let Ok((cfg, _)) = <VirtioDxgConfig as zerocopy::FromBytes>::read_from_prefix(bytes) {
        let _ = cfg.adapters();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        decode_everything(&bytes);
    }

    /// Garbage behind a valid header reaches the per-command decoders.
    #[test]
    fn garbage_after_valid_header(
        i in 0..KINDS,
        m in material(),
        junk in proptest::collection::vec(any::<u8>(), 0..600),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = build(i, &m).encode();
        let keep = cut.index(bytes.len().min(24) + 1);
        let mut mixed = bytes[..keep].to_vec();
        mixed.extend_from_slice(&junk);
        decode_everything(&mixed);
    }

    #[test]
    fn truncated_requests_fail(i in 0..KINDS, m in material(), cut in any::<prop::sample::Index>()) {
        let req = build(i, &m);
        let bytes = req.encode();
        let len = cut.index(bytes.len());
        match Request::decode(&bytes[..len]) {
            Err(_) => {}
            // A signal's fence values are optional, so dropping exactly
            // them leaves a valid (different) message.
            Ok(Request::SignalSyncObject { fence_values, .. }) => prop_assert!(fence_values.is_empty()),
            Ok(other) => prop_assert!(false, "truncated {} decoded as {:?}", req.name(), other.name()),
        }
    }

    #[test]
    fn oversized_requests_fail(i in 0..KINDS, m in material(), extra in 1usize..16) {
        let req = build(i, &m);
        let mut bytes = req.encode();
        bytes.resize(bytes.len() + extra, 0xa5);
        match (Request::decode(&bytes), &req) {
            (Err(_), _) => {}
            // A signal without fence values plus exactly one u64 per object
            // is a signal with fence values.
            (Ok(Request::SignalSyncObject { objects, .. }), Request::SignalSyncObject { fence_values, .. })
                if fence_values.is_empty() && extra == objects.len() * 8 => {}
            (Ok(other), _) => prop_assert!(false, "oversized {} decoded as {}", req.name(), other.name()),
        }
    }

    #[test]
    fn truncated_and_oversized_replies_fail(i in 0..KINDS, m in material(), cut in any::<prop::sample::Index>(), extra in 1usize..9) {
        let req = Request::decode(&build(i, &m).encode()).unwrap();
        let bytes = build_reply(&req, &m).encode();
        prop_assert!(Reply::decode(&req, &bytes).is_ok());
        if !bytes.is_empty() {
            let len = cut.index(bytes.len());
            prop_assert!(Reply::decode(&req, &bytes[..len]).is_err());
        }
        let mut long = bytes;
        long.resize(long.len() + extra, 0);
        prop_assert!(Reply::decode(&req, &long).is_err());
    }

    #[test]
    fn streams_with_bad_sizes_fail(m in material(), cut in any::<prop::sample::Index>()) {
        let _ = m;
        let stream = CommandStream {
            commands: vec![
                crate::cmdstream::Command::Timestamp { dst_va: 0x1000 },
                crate::cmdstream::Command::Copy { src_va: 0, dst_va: 0x100, size: 0x100 },
            ],
        };
        let bytes = stream.encode();
        let len = cut.index(bytes.len());
        prop_assert!(CommandStream::decode(&bytes[..len]).is_err());
    }
}

#[test]
fn frame_rejections() {
    let payload = [0u8; 24];
    let good = encode_frame(
        FrameKind::Request,
        1,
        Default::default(),
        NtStatus::SUCCESS,
        &payload,
    );
    assert!(Frame::parse(&good, FrameKind::Request).is_ok());
    assert!(matches!(
        Frame::parse(&good, FrameKind::Reply),
        Err(DecodeError::InvalidValue { .. })
    ));
    let mut bad = good.clone();
    bad[0] ^= 1;
    assert!(matches!(
        Frame::parse(&bad, FrameKind::Request),
        Err(DecodeError::BadMagic { .. })
    ));
    let mut bad = good.clone();
    bad[4] = 2;
    assert!(matches!(
        Frame::parse(&bad, FrameKind::Request),
        Err(DecodeError::UnsupportedVersion { .. })
    ));
    let mut bad = good.clone();
    bad[6] = 0x80;
    assert!(Frame::parse(&bad, FrameKind::Request).is_err());
    let mut bad = good.clone();
    bad[16..20].copy_from_slice(&((MAX_PAYLOAD + 1) as u32).to_le_bytes());
    assert!(matches!(
        Frame::parse(&bad, FrameKind::Request),
        Err(DecodeError::TooLarge { .. })
    ));
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        Frame::parse(&long, FrameKind::Request),
        Err(DecodeError::TrailingBytes { .. })
    ));
    assert!(Frame::parse(&good[..good.len() - 1], FrameKind::Request).is_err());
    // A failed reply carries no payload.
    let failed = encode_frame(
        FrameKind::Reply,
        1,
        Default::default(),
        NtStatus::NO_MEMORY,
        &[1],
    );
    assert!(Frame::parse(&failed, FrameKind::Reply).is_err());
    // A request carries no status.
    let mut bad = good;
    bad[20] = 1;
    assert!(Frame::parse(&bad, FrameKind::Request).is_err());
}

#[test]
fn command_rejections() {
    let hdr = DxgkvmbCommandVgpuToHost::new(
        vgpu::DXGK_VMBCOMMAND_DDIQUERYADAPTERINFO,
        Default::default(),
    );
    let bytes = zerocopy::IntoBytes::as_bytes(&hdr).to_vec();
    let err = Request::decode(&bytes).unwrap_err();
    assert_eq!(err.status(), NtStatus::NOT_SUPPORTED);
    let mut unknown = bytes.clone();
    unknown[16] = 200;
    let err = Request::decode(&unknown).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::UnknownCommand { command: 200, .. }
    ));
    let mut chan = bytes.clone();
    chan[12] = 7;
    assert_eq!(
        Request::decode(&chan).unwrap_err(),
        DecodeError::UnknownChannel(7)
    );
    let mut reserved = bytes;
    reserved[14] = 1;
    assert!(Request::decode(&reserved).is_err());
    assert!(Request::decode(&[0; 23]).is_err());
    assert!(Request::decode(&vec![0; MAX_PAYLOAD + 1]).is_err());

    // A count beyond its limit fails before any allocation is sized by it.
    let mut c: DxgkvmbCommandSignalSyncObject = zerocopy::FromZeros::new_zeroed();
    c.hdr =
        DxgkvmbCommandVgpuToHost::new(vgpu::DXGK_VMBCOMMAND_SIGNALSYNCOBJECT, Default::default());
    c.object_count = u32::MAX;
    let err = Request::decode(zerocopy::IntoBytes::as_bytes(&c)).unwrap_err();
    assert!(matches!(err, DecodeError::CountTooLarge { .. }), "{err}");

    let mut a: DxgkvmbCommandCreateAllocation = zerocopy::FromZeros::new_zeroed();
    a.hdr =
        DxgkvmbCommandVgpuToHost::new(vgpu::DXGK_VMBCOMMAND_CREATEALLOCATION, Default::default());
    assert!(Request::decode(zerocopy::IntoBytes::as_bytes(&a)).is_err());
    a.alloc_count = 1;
    a.private_runtime_data_size = u32::MAX;
    let mut bytes = zerocopy::IntoBytes::as_bytes(&a).to_vec();
    bytes.extend_from_slice(&[0; 12]);
    assert!(matches!(
        Request::decode(&bytes),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn stream_rejections() {
    use crate::cmdstream::Command;
    let bad = |cmd: Command| {
        CommandStream::decode(
            &CommandStream {
                commands: vec![cmd],
            }
            .encode(),
        )
    };
    assert!(
        bad(Command::Copy {
            src_va: 0,
            dst_va: 0x10,
            size: 0x20
        })
        .is_err(),
        "overlap"
    );
    assert!(
        bad(Command::Copy {
            src_va: 1,
            dst_va: 0x100,
            size: 4
        })
        .is_err(),
        "alignment"
    );
    assert!(
        bad(Command::Fill {
            dst_va: 0,
            size: 0,
            value: 0
        })
        .is_err(),
        "empty"
    );
    assert!(
        bad(Command::Fill {
            dst_va: u64::MAX - 3,
            size: 8,
            value: 0
        })
        .is_err(),
        "wrap"
    );
    assert!(
        bad(Command::Timestamp { dst_va: 4 }).is_err(),
        "timestamp alignment"
    );
    assert!(
        bad(Command::Upload { va: 2, size: 8 }).is_err(),
        "upload alignment"
    );
    assert!(
        bad(Command::Upload { va: 0, size: 0 }).is_err(),
        "empty upload"
    );
    assert!(
        bad(Command::Upload {
            va: u64::MAX - 3,
            size: 8
        })
        .is_err(),
        "upload wrap"
    );
    assert!(
        bad(Command::FenceSignal {
            sync_object: Default::default(),
            value: 1
        })
        .is_err(),
        "null fence"
    );
    let binding = |slot| crate::cmdstream::Binding {
        binding: slot,
        read_only: false,
        va: 0,
        size: 4,
    };
    let dispatch = |groups, bindings| Command::Dispatch {
        pipeline: 1,
        group_counts: groups,
        bindings,
    };
    assert!(
        bad(dispatch([65536, 1, 1], vec![])).is_err(),
        "too many groups"
    );
    assert!(
        bad(dispatch([1, 1, 1], vec![binding(0), binding(0)])).is_err(),
        "duplicate slot"
    );
    assert!(
        bad(dispatch([1, 1, 1], vec![binding(MAX_BINDINGS)])).is_err(),
        "slot range"
    );
    assert!(bad(dispatch(
        [1, 1, 1],
        vec![binding(0); MAX_BINDINGS as usize + 1]
    ))
    .is_err());
    assert!(bad(dispatch([1, 1, 1], vec![binding(3)])).is_ok());

    let good = CommandStream {
        commands: vec![Command::Timestamp { dst_va: 8 }],
    }
    .encode();
    let mut wrong_count = good.clone();
    wrong_count[12] = 2;
    assert!(CommandStream::decode(&wrong_count).is_err());
    let mut wrong_op = good.clone();
    wrong_op[DxgvCmdStreamHeader::SIZE] = 99;
    assert!(CommandStream::decode(&wrong_op).is_err());
    let mut wrong_size = good.clone();
    wrong_size[DxgvCmdStreamHeader::SIZE + 4] = 24;
    assert!(CommandStream::decode(&wrong_size).is_err());
    let mut zero_size = good.clone();
    zero_size[DxgvCmdStreamHeader::SIZE + 4] = 0;
    assert!(CommandStream::decode(&zero_size).is_err());
    let mut longer = good;
    longer.extend_from_slice(&[0; 8]);
    assert!(CommandStream::decode(&longer).is_err());
}

#[test]
fn escape_rejections() {
    use crate::escape::*;
    let req = EscapeRequest::CreatePipeline(CreatePipeline {
        language: ShaderLanguage::SpirV,
        source: vec![3, 2, 0x23, 7],
        entry_point: "main".into(),
        error_capacity: 16,
    });
    let good = req.encode();
    assert!(EscapeRequest::decode(&good).is_ok());
    let mut lang = good.clone();
    lang[20] = 9;
    assert!(EscapeRequest::decode(&lang).is_err());
    let mut odd = good.clone();
    odd[24] = 3;
    assert!(
        EscapeRequest::decode(&odd).is_err(),
        "SPIR-V size not whole words"
    );
    let mut utf = good.clone();
    utf[44] = 0xff;
    assert!(
        EscapeRequest::decode(&utf).is_err(),
        "entry point not UTF-8"
    );
    let mut cap = good.clone();
    cap[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(EscapeRequest::decode(&cap).is_err());
    assert!(EscapeRequest::decode(&good[..good.len() - 1]).is_err());
    let mut status = good.clone();
    status[12] = 1;
    assert!(
        EscapeRequest::decode(&status).is_err(),
        "requests carry no status"
    );
    let mut err_size = good.clone();
    err_size[36] = 17;
    assert!(EscapeResponse::decode(&err_size).is_err());
    let mut op = good;
    op[6] = 9;
    assert!(EscapeRequest::decode(&op).is_err());
}

/// Found by the decode_cmdstream fuzz target: a FENCE_SIGNAL with non-zero
/// padding decoded, and re-encoded to other bytes. Padding is now refused,
/// so whatever decodes re-encodes to the same bytes.
#[test]
fn stream_padding_must_be_zero() {
    let crash: [u8; 40] = [
        68, 88, 67, 83, 1, 0, 0, 0, 40, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 20,
        19, 19, 11, 0, 0, 32, 2, 0, 2, 0, 0, 0,
    ];
    assert!(CommandStream::decode(&crash).is_err());
    let mut clean = crash;
    clean[28..32].fill(0);
    let stream = CommandStream::decode(&clean).unwrap();
    assert_eq!(stream.encode(), clean);
}
