//! dxginfo's output: the guest's adapters in exactly the format `dxvmm gpus`
//! prints the host's (host-backend's `report` module), so a test can compare
//! the two as JSON values. Reimplemented here because host-backend pulls in
//! wgpu, which has no place in a guest binary.

use dxvmm_protocol::escape::{device_type, get_str, DxgvHostAdapterInfo, DxgvHostObjects};
use serde::Serialize;

/// One adapter, as `dxginfo --json` prints it: the fields, names and order
/// of host-backend's `AdapterReport`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AdapterReport {
    /// Position in ENUMADAPTERS3's list (0 is the default).
    pub index: usize,
    pub name: String,
    /// `HIGH:LOW` in hex, as Windows tools print a LUID.
    pub luid: String,
    pub luid_high: u32,
    pub luid_low: u32,
    pub backend: String,
    /// host-backend's `DeviceKind`, kebab-case.
    pub kind: &'static str,
    pub software: bool,
    pub vendor_id: u32,
    pub device_id: u32,
    pub driver: String,
    pub driver_info: String,
    pub memory_bytes: u64,
}

/// The kebab-case name of a `device_type` value. A value this build does not
/// know is reported as "other", as wgpu itself classifies unknown devices.
pub fn kind_name(t: u32) -> &'static str {
    match t {
        device_type::DISCRETE_GPU => "discrete-gpu",
        device_type::INTEGRATED_GPU => "integrated-gpu",
        device_type::VIRTUAL_GPU => "virtual-gpu",
        device_type::CPU => "cpu",
        _ => "other",
    }
}

/// The report of adapter `index` from its HOST_ADAPTER answer (already
/// checked for magic and version).
pub fn adapter_report(index: usize, a: &DxgvHostAdapterInfo) -> AdapterReport {
    AdapterReport {
        index,
        name: get_str(&a.name),
        luid: format!("{:08x}:{:08x}", a.luid.b, a.luid.a),
        luid_high: a.luid.b,
        luid_low: a.luid.a,
        backend: get_str(&a.backend),
        kind: kind_name(a.device_type),
        // Any non-zero word is "software"; the host writes 0 or 1.
        software: a.software != 0,
        vendor_id: a.vendor_id,
        device_id: a.device_id,
        driver: get_str(&a.driver),
        driver_info: get_str(&a.driver_info),
        memory_bytes: a.memory_bytes,
    }
}

/// The reports as a pretty-printed JSON array (what `dxvmm gpus --json`
/// prints for the host).
pub fn adapters_json(reports: &[AdapterReport]) -> String {
    // Plain data with string keys: serialization cannot fail.
    serde_json::to_string_pretty(reports).unwrap_or_else(|_| "[]".into())
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// A table for people, laid out as `dxvmm gpus` lays out the host's.
pub fn adapters_table(reports: &[AdapterReport]) -> String {
    let rows = reports.iter().map(|r| {
        let driver = if r.driver_info.is_empty() {
            r.driver.clone()
        } else {
            format!("{} {}", r.driver, r.driver_info)
        };
        let kind = if r.software { "software" } else { "hardware" };
        [
            r.index.to_string(),
            r.name.clone(),
            r.luid.clone(),
            format!("{} ({kind})", r.backend),
            driver,
            gib(r.memory_bytes),
        ]
    });
    table(["#", "NAME", "LUID", "BACKEND", "DRIVER", "MEMORY"], rows)
}

/// Columns padded to their widest cell, two spaces apart, no trailing blanks.
fn table<const N: usize>(head: [&str; N], rows: impl Iterator<Item = [String; N]>) -> String {
    let rows: Vec<[String; N]> = rows.collect();
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for line in std::iter::once(head.map(String::from)).chain(rows) {
        let cells: Vec<String> = line
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// HOST_OBJECTS counts, for `dxginfo --objects`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectsReport {
    pub processes: u32,
    pub adapters: u32,
    pub devices: u32,
    pub contexts: u32,
    pub allocations: u32,
    pub sync_objects: u32,
    pub paging_queues: u32,
    pub hw_queues: u32,
    pub pipelines: u32,
}

impl From<&DxgvHostObjects> for ObjectsReport {
    fn from(o: &DxgvHostObjects) -> Self {
        ObjectsReport {
            processes: o.processes,
            adapters: o.adapters,
            devices: o.devices,
            contexts: o.contexts,
            allocations: o.allocations,
            sync_objects: o.sync_objects,
            paging_queues: o.paging_queues,
            hw_queues: o.hw_queues,
            pipelines: o.pipelines,
        }
    }
}

impl ObjectsReport {
    fn rows(&self) -> [(&'static str, u32); 9] {
        [
            ("processes", self.processes),
            ("adapters", self.adapters),
            ("devices", self.devices),
            ("contexts", self.contexts),
            ("allocations", self.allocations),
            ("sync_objects", self.sync_objects),
            ("paging_queues", self.paging_queues),
            ("hw_queues", self.hw_queues),
            ("pipelines", self.pipelines),
        ]
    }

    /// A pretty-printed JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    /// One `NAME COUNT` line per object type.
    pub fn table(&self) -> String {
        table(
            ["OBJECTS", "COUNT"],
            self.rows()
                .into_iter()
                .map(|(k, v)| [k.to_string(), v.to_string()]),
        )
    }

    /// `processes=1 devices=0 ...` on one line, for test logs.
    pub fn line(&self) -> String {
        self.rows()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dxvmm_protocol::abi::WinLuid;
    use dxvmm_protocol::escape::{put_str, DXGV_HOST_ADAPTER_MAGIC, DXGV_HOST_ADAPTER_VERSION};

    fn lavapipe() -> DxgvHostAdapterInfo {
        let mut a = DxgvHostAdapterInfo {
            magic: DXGV_HOST_ADAPTER_MAGIC,
            version: DXGV_HOST_ADAPTER_VERSION,
            luid: WinLuid { a: 0x1234, b: 0x1 },
            vendor_id: 0x10005,
            device_id: 0,
            device_type: device_type::CPU,
            software: 1,
            memory_bytes: 3 << 29,
            ..Default::default()
        };
        put_str(&mut a.backend, "vulkan");
        put_str(&mut a.driver, "llvmpipe");
        put_str(&mut a.driver_info, "Mesa 25.0.7");
        put_str(&mut a.name, "llvmpipe (LLVM 15.0.6, 256 bits)");
        a
    }

    #[test]
    fn json_has_host_backends_fields_in_order() {
        let json = adapters_json(&[adapter_report(0, &lavapipe())]);
        let expected = r#"[
  {
    "index": 0,
    "name": "llvmpipe (LLVM 15.0.6, 256 bits)",
    "luid": "00000001:00001234",
    "luid_high": 1,
    "luid_low": 4660,
    "backend": "vulkan",
    "kind": "cpu",
    "software": true,
    "vendor_id": 65541,
    "device_id": 0,
    "driver": "llvmpipe",
    "driver_info": "Mesa 25.0.7",
    "memory_bytes": 1610612736
  }
]"#;
        assert_eq!(json, expected);
        assert_eq!(adapters_json(&[]), "[]");
    }

    #[test]
    fn kinds_are_kebab_case() {
        assert_eq!(kind_name(device_type::DISCRETE_GPU), "discrete-gpu");
        assert_eq!(kind_name(device_type::INTEGRATED_GPU), "integrated-gpu");
        assert_eq!(kind_name(device_type::VIRTUAL_GPU), "virtual-gpu");
        assert_eq!(kind_name(device_type::OTHER), "other");
        assert_eq!(kind_name(77), "other");
    }

    #[test]
    fn table_lays_out_like_dxvmm_gpus() {
        let t = adapters_table(&[adapter_report(0, &lavapipe())]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "#  NAME                              LUID               BACKEND            DRIVER                MEMORY"
        );
        assert_eq!(
            lines[1],
            "0  llvmpipe (LLVM 15.0.6, 256 bits)  00000001:00001234  vulkan (software)  llvmpipe Mesa 25.0.7  1.5 GiB"
        );
    }

    #[test]
    fn objects_print_as_json_and_lines() {
        let o = ObjectsReport::from(&DxgvHostObjects {
            processes: 2,
            devices: 3,
            ..Default::default()
        });
        let v: serde_json::Value = serde_json::from_str(&o.json()).unwrap();
        assert_eq!(v["processes"], 2);
        assert_eq!(v["devices"], 3);
        assert!(o.line().starts_with("processes=2 adapters=0 devices=3"));
        assert!(o
            .table()
            .starts_with("OBJECTS        COUNT\nprocesses      2\n"));
    }
}
