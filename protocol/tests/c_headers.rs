//! The C headers in guest-kernel/include carry the same layouts as this
//! crate and assert them with `_Static_assert`; compiling them is the check.
//! Skipped (with a note) where no C compiler is installed.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn c_headers_compile_with_their_layout_asserts() {
    let include = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest-kernel/include");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if Command::new(&cc).arg("--version").output().is_err() {
        eprintln!("no C compiler ({cc}); header layout check skipped");
        return;
    }
    let dir = std::env::temp_dir().join(format!("dxvmm-protocol-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("headers.c");
    std::fs::write(
        &src,
        "#include <misc/d3dkmthk.h>\n#include <misc/dxvmm_gpu.h>\n#include \"dxgvmbus.h\"\n\
         int main(void) { return LX_DXLOCK2 == 0xC0184725u ? 0 : 1; }\n",
    )
    .unwrap();
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only"])
        .arg("-I")
        .arg(&include)
        .arg("-I")
        .arg(include.join("uapi"))
        .arg(&src)
        .output()
        .expect("run the C compiler");
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "C headers failed to compile:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
