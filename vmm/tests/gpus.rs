//! `dxvmm gpus`: lists the host's Vulkan adapters (lavapipe on CI).

use std::process::Command;

fn gpu_tests_skipped() -> bool {
    std::env::var("DXVMM_SKIP_GPU_TESTS").as_deref() == Ok("1")
}

#[test]
fn gpus_json_lists_the_default_adapter() {
    if gpu_tests_skipped() {
        eprintln!("skipped: DXVMM_SKIP_GPU_TESTS=1");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dxvmm"))
        .args(["gpus", "--json"])
        .output()
        .expect("running dxvmm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dxvmm gpus --json failed ({}): {}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let list = v.as_array().expect("an array");
    assert!(!list.is_empty(), "no adapter listed");
    for (i, a) in list.iter().enumerate() {
        assert_eq!(a["index"], i);
        assert_eq!(a["backend"], "vulkan");
        assert!(!a["name"].as_str().unwrap().is_empty());
        let luid = a["luid"].as_str().unwrap();
        assert_eq!(luid.len(), 17, "{luid}");
        assert!(a["memory_bytes"].as_u64().unwrap() > 0);
    }

    // The LUID is the same on every run.
    let again = Command::new(env!("CARGO_BIN_EXE_dxvmm"))
        .args(["gpus", "--json"])
        .output()
        .unwrap();
    let v2: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v[0]["luid"], v2[0]["luid"]);

    // The table names the same adapter.
    let table = Command::new(env!("CARGO_BIN_EXE_dxvmm"))
        .arg("gpus")
        .output()
        .unwrap();
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("#  NAME"), "{text}");
    assert!(text.contains(list[0]["name"].as_str().unwrap()), "{text}");
}
