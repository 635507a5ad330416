//! What `dxvmm gpus` prints: the host adapters as the guest will see them.

use serde::Serialize;

use crate::backend::{AdapterInfo, DeviceKind};

/// One adapter, as `dxvmm gpus --json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AdapterReport {
    /// Position in the guest's adapter list (0 is the default).
    pub index: usize,
    pub name: String,
    /// `HIGH:LOW` in hex, as Windows tools print a LUID.
    pub luid: String,
    pub luid_high: u32,
    pub luid_low: u32,
    pub backend: String,
    pub kind: DeviceKind,
    pub software: bool,
    pub vendor_id: u32,
    pub device_id: u32,
    pub driver: String,
    pub driver_info: String,
    /// Bytes of allocations the guest may make on it.
    pub memory_bytes: u64,
}

/// Reports for `adapters`, in order.
pub fn adapter_report(adapters: &[AdapterInfo]) -> Vec<AdapterReport> {
    adapters
        .iter()
        .enumerate()
        .map(|(index, a)| AdapterReport {
            index,
            name: a.name.clone(),
            luid: format!("{:08x}:{:08x}", a.luid.b, a.luid.a),
            luid_high: a.luid.b,
            luid_low: a.luid.a,
            backend: a.backend.clone(),
            kind: a.kind,
            software: a.software,
            vendor_id: a.vendor_id,
            device_id: a.device_id,
            driver: a.driver.clone(),
            driver_info: a.driver_info.clone(),
            memory_bytes: a.memory_budget,
        })
        .collect()
}

/// The reports as a JSON array (pretty-printed, one adapter per object).
pub fn adapters_json(adapters: &[AdapterInfo]) -> String {
    // Plain data with string keys: serialization cannot fail.
    serde_json::to_string_pretty(&adapter_report(adapters)).unwrap_or_else(|_| "[]".into())
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// A table for people: one line per adapter, the default first.
pub fn adapters_table(adapters: &[AdapterInfo]) -> String {
    let rows: Vec<[String; 6]> = adapter_report(adapters)
        .into_iter()
        .map(|r| {
            let driver = if r.driver_info.is_empty() {
                r.driver
            } else {
                format!("{} {}", r.driver, r.driver_info)
            };
            let kind = if r.software { "software" } else { "hardware" };
            [
                r.index.to_string(),
                r.name,
                r.luid,
                format!("{} ({kind})", r.backend),
                driver,
                gib(r.memory_bytes),
            ]
        })
        .collect();
    let head = ["#", "NAME", "LUID", "BACKEND", "DRIVER", "MEMORY"];
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, SoftBackend};

    #[test]
    fn table_and_json_describe_each_adapter() {
        let adapters = SoftBackend::new().adapters();
        let t = adapters_table(&adapters);
        assert!(t.starts_with("#  NAME"), "{t}");
        assert!(t.contains("dxvmm soft adapter"), "{t}");
        assert!(t.contains("cpu (software)"), "{t}");
        let v: serde_json::Value = serde_json::from_str(&adapters_json(&adapters)).unwrap();
        assert_eq!(v[0]["index"], 0);
        assert_eq!(v[0]["kind"], "cpu");
        assert_eq!(v[0]["luid_low"], adapters[0].luid.a);
        assert_eq!(v[0]["memory_bytes"], 1u64 << 30);
    }
}
