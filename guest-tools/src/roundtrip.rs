//! `dxgtest roundtrip [N]`: the latency of an ioctl that reaches the host
//! and back (QUERYADAPTERINFO of HOST_OBJECTS: no backend work, so the time
//! is the guest driver, the transport and the device's dispatch).

use std::time::Instant;

use dxvmm_protocol::escape::{qai_type, DxgvHostObjects};
use libdxg::{Dxg, Error};

/// Calls made before timing, so that process creation on the host and cold
/// caches stay out of the figures.
const WARMUP: usize = 100;

/// Latency figures in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Figures {
    pub n: usize,
    pub median_ns: u64,
    pub p99_ns: u64,
    pub min_ns: u64,
}

/// Median, 99th percentile (nearest rank) and minimum of `samples`.
pub fn figures(samples: &mut [u64]) -> Option<Figures> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let n = samples.len();
    let p99_rank = (n * 99).div_ceil(100).max(1);
    Some(Figures {
        n,
        median_ns: samples[n / 2],
        p99_ns: samples[p99_rank - 1],
        min_ns: samples[0],
    })
}

impl Figures {
    /// One JSON object on one line.
    pub fn json(&self, ioctl: &str) -> String {
        format!(
            "{{\"ioctl\":{},\"n\":{},\"median_ns\":{},\"p99_ns\":{},\"min_ns\":{}}}",
            serde_json::Value::from(ioctl),
            self.n,
            self.median_ns,
            self.p99_ns,
            self.min_ns
        )
    }
}

/// What the JSON's "ioctl" names.
pub const IOCTL: &str = "LX_DXQUERYADAPTERINFO(HOST_OBJECTS)";

/// Times `n` calls.
pub fn run(n: usize) -> Result<Figures, Error> {
    let dxg = Dxg::open()?;
    let adapter = dxg.adapters()?.into_iter().next().ok_or(Error::BadAnswer {
        ioctl: "LX_DXENUMADAPTERS3",
        what: "no adapters".into(),
    })?;
    let mut buf = [0u8; DxgvHostObjects::SIZE];
    for _ in 0..WARMUP {
        adapter.query_info(qai_type::HOST_OBJECTS, &mut buf)?;
    }
    // The answer is checked once, outside the timed loop.
    DxgvHostObjects::decode(&buf).map_err(|source| Error::Decode {
        ioctl: "LX_DXQUERYADAPTERINFO",
        source,
    })?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        adapter.query_info(qai_type::HOST_OBJECTS, &mut buf)?;
        samples.push(t.elapsed().as_nanos().min(u64::MAX as u128) as u64);
    }
    figures(&mut samples).ok_or(Error::BadArgument {
        ioctl: "LX_DXQUERYADAPTERINFO",
        what: "no calls to time",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let f = figures(&mut v).unwrap();
        assert_eq!((f.n, f.median_ns, f.p99_ns, f.min_ns), (100, 51, 99, 1));
        let f = figures(&mut [7]).unwrap();
        assert_eq!((f.median_ns, f.p99_ns, f.min_ns), (7, 7, 7));
        assert_eq!(figures(&mut []), None);
        assert_eq!(
            f.json(IOCTL),
            r#"{"ioctl":"LX_DXQUERYADAPTERINFO(HOST_OBJECTS)","n":1,"median_ns":7,"p99_ns":7,"min_ns":7}"#
        );
    }
}
