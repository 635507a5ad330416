//! Feeds arbitrary bytes to the trace reader, as `dxvmm trace` reads a file
//! someone else recorded, and what reads back to `show`, `stats`, the
//! pcapng export and `diff`. Nothing may panic; a bad file is an error.
#![no_main]

use dxvmm_trace::show::{show, stats, write_stats, Filter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((header, records)) = dxvmm_trace::read_bytes(data) else {
        return;
    };
    let all = Filter {
        all: true,
        ..Filter::default()
    };
    let mut out = std::io::sink();
    let _ = show(&mut out, &header, &records, &all, false);
    let _ = show(&mut out, &header, &records, &all, true);
    let _ = write_stats(&mut out, &stats(&records), true);
    let _ = dxvmm_trace::pcapng::export(&mut out, &header, &records);
    // `trace diff`: the trace against itself, and its two halves against
    // each other (calls that part and meet again).
    let _ = dxvmm_trace::diff::diff((&header, &records), (&header, &records), &[], 20);
    let (first, second) = records.split_at(records.len() / 2);
    let _ = dxvmm_trace::diff::diff((&header, first), (&header, second), &[], 20);
});
