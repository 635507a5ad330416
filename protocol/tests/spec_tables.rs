//! docs/protocol.md is the spec: every wire struct of this crate must have
//! its byte table there, with the size and field offsets the code has.

use std::path::PathBuf;

/// A struct's name, size and (field, offset) list.
type Layout = (String, usize, Vec<(String, usize)>);

/// The layout of every `wire_struct!` in `src`.
fn structs_in(src: &str) -> Vec<Layout> {
    let mut out = Vec::new();
    let mut current: Option<Layout> = None;
    for line in src.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("pub struct ") {
            if let Some((name, size)) = rest.split_once(" [") {
                if let Some(size) = size.strip_suffix("] {") {
                    if let Some(done) = current.take() {
                        out.push(done);
                    }
                    current = Some((name.to_string(), size.parse().unwrap(), Vec::new()));
                    continue;
                }
            }
        }
        if let (Some(cur), Some(rest)) = (current.as_mut(), t.strip_prefix("pub ")) {
            if let Some((field, tail)) = rest.split_once(": ") {
                if let Some((_, off)) = tail.rsplit_once(" => ") {
                    let off = off.trim_end_matches(',').parse().unwrap();
                    cur.2
                        .push((field.trim_start_matches("r#").to_string(), off));
                }
            }
        }
    }
    out.extend(current);
    out
}

#[test]
fn every_wire_struct_is_in_the_spec() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("../docs/protocol.md")).expect("docs/protocol.md");
    let mut checked = 0;
    for file in [
        "abi.rs",
        "vmbus.rs",
        "frame.rs",
        "cmdstream.rs",
        "escape.rs",
    ] {
        let src = std::fs::read_to_string(root.join("src").join(file)).unwrap();
        for (name, size, fields) in structs_in(&src) {
            let heading = format!("#### `{name}` ({size} bytes");
            let at = doc.find(&heading).unwrap_or_else(|| {
                panic!("docs/protocol.md lacks a table for {name} ({size} bytes)")
            });
            let table = &doc[at..];
            let table = &table[..table[4..].find("####").map_or(table.len(), |e| e + 4)];
            for (field, off) in fields {
                let row = format!("| {off} | ");
                let cell = format!("`{field}`");
                assert!(
                    table
                        .lines()
                        .any(|l| l.starts_with(&row) && l.contains(&cell)),
                    "{name}.{field} at offset {off} missing from its table in docs/protocol.md"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 80, "only {checked} structs found");
}
