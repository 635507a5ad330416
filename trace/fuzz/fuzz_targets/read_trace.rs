//! Feeds arbitrary bytes to the trace reader, as `dxvmm trace` reads a file
//! someone else recorded, and what reads back to `show`, `stats` and the
//! pcapng export. Nothing may panic; a bad file is an error.
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
});
