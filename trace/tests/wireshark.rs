//! The Wireshark dissector (trace/wireshark/dxvmm.lua): it names every
//! command protocol/ knows, and tshark decodes an exported corpus trace
//! with it.

use std::path::Path;
use std::process::Command;

use dxvmm_protocol::message::command_name;
use dxvmm_protocol::vmbus::{DXGKVMB_HOST_TO_VM, DXGKVMB_VGPU_TO_HOST, DXGKVMB_VM_TO_HOST};

fn lua() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("wireshark/dxvmm.lua"))
        .unwrap()
}

/// The body of `local NAME = { ... }` in the script.
fn table<'a>(src: &'a str, name: &str) -> &'a str {
    let start = src.find(&format!("local {name} = {{")).expect(name);
    let end = src[start..].find("\n}").unwrap();
    &src[start..start + end]
}

#[test]
fn the_dissector_names_every_command_of_the_protocol() {
    let src = lua();
    for (channel, t) in [
        (DXGKVMB_VGPU_TO_HOST, "vgpu_commands"),
        (DXGKVMB_VM_TO_HOST, "global_commands"),
        (DXGKVMB_HOST_TO_VM, "host_commands"),
    ] {
        let body = table(&src, t);
        let mut n = 0;
        for command in 0..2000 {
            if let Some(name) = command_name(channel, command) {
                let short = name.strip_prefix("DXGK_VMBCOMMAND_").unwrap();
                let entry = format!("[{command}] = \"{short}\",");
                assert!(body.contains(&entry), "{t} lacks {entry}");
                n += 1;
            }
        }
        assert_eq!(
            body.matches("] = \"").count(),
            n,
            "{t} has names protocol/ lacks"
        );
    }
}

#[test]
fn tshark_decodes_an_exported_trace() {
    if Command::new("tshark").arg("--version").output().is_err() {
        eprintln!("skipped: tshark is not installed (images/deps.sh installs it)");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A session's messages, and a compute run with memory of every purpose.
    for name in ["dxginfo", "compute"] {
        let (header, records) =
            dxvmm_trace::read_all(&dir.join(format!("corpus/{name}.dxtrace"))).unwrap();
        let out =
            std::env::temp_dir().join(format!("dxvmm-trace-{}-{name}.pcapng", std::process::id()));
        let mut f = std::fs::File::create(&out).unwrap();
        dxvmm_trace::pcapng::export(&mut f, &header, &records).unwrap();
        drop(f);
        let r = Command::new("tshark")
            .arg("-X")
            .arg(format!(
                "lua_script:{}",
                dir.join("wireshark/dxvmm.lua").display()
            ))
            .arg("-r")
            .arg(&out)
            .args([
                "-T",
                "fields",
                "-e",
                "dxvmm.kind",
                "-e",
                "dxvmm.command_name",
                "-e",
                "dxvmm.frame.status",
            ])
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&out);
        let text = String::from_utf8_lossy(&r.stdout);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let expected: Vec<String> = dxvmm_trace::show::messages(&records, false)
            .iter()
            .filter(|m| matches!(m.kind, "request" | "reply"))
            .map(|m| m.command.clone())
            .collect();
        let got: Vec<&str> = text
            .lines()
            .filter(|l| matches!(l.split('\t').next(), Some("1" | "2")))
            .map(|l| l.split('\t').nth(1).unwrap_or(""))
            .collect();
        assert_eq!(got, expected, "{name}: tshark said:\n{text}");
        assert!(got.contains(&"OPENADAPTER") && got.contains(&"CREATEPROCESS"));
        if name == "compute" {
            for purpose in ["memory input", "memory result", "memory result digest"] {
                assert!(
                    text.lines().any(|l| l.split('\t').nth(1) == Some(purpose)),
                    "no {purpose}:\n{text}"
                );
            }
        }
    }
}

#[test]
fn tshark_decodes_a_result_digest() {
    if Command::new("tshark").arg("--version").output().is_err() {
        eprintln!("skipped: tshark is not installed (images/deps.sh installs it)");
        return;
    }
    use dxvmm_trace::format::{Record, TraceHeader};
    let header = TraceHeader {
        start_unix_ns: 1,
        frame_version: 1,
        producer: "test".into(),
        host: "test".into(),
        adapters: vec![],
    };
    let digest = 0x0011_2233_4455_6677_8899_aabb_ccdd_eeffu128;
    let mut bytes = header.encode();
    for r in [
        Record::Digest {
            t: 5,
            gpa: 0x12_3000,
            len: 0x4_0000,
            digest,
        },
        Record::End { t: 6, records: 1 },
    ] {
        r.encode_into(&mut bytes);
    }
    let (header, records) = dxvmm_trace::read_bytes(&bytes).unwrap();
    let out =
        std::env::temp_dir().join(format!("dxvmm-trace-digest-{}.pcapng", std::process::id()));
    let mut f = std::fs::File::create(&out).unwrap();
    assert_eq!(
        dxvmm_trace::pcapng::export(&mut f, &header, &records).unwrap(),
        1
    );
    drop(f);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let r = Command::new("tshark")
        .arg("-X")
        .arg(format!(
            "lua_script:{}",
            dir.join("wireshark/dxvmm.lua").display()
        ))
        .arg("-r")
        .arg(&out)
        .args(["-T", "fields", "-E", "separator=,"])
        .args(["-e", "dxvmm.purpose", "-e", "dxvmm.command_name"])
        .args(["-e", "dxvmm.memory.gpa", "-e", "dxvmm.memory.length"])
        .args(["-e", "dxvmm.memory.digest"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&out);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let text = String::from_utf8_lossy(&r.stdout);
    let le: String = digest
        .to_le_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        text.trim(),
        format!("2,memory result digest,0x0000000000123000,262144,{le}")
    );
}
