//! dxvmm-stdin: the guest half of piped standard input.
//!
//! Reads the framed input dxvmm sends on the console (protocol's `stdin`
//! module) from stdin and writes the data to stdout, which `/init` makes the
//! pipe the command reads; at the end mark it exits, and the command sees
//! the end of its input. Exits quietly when the command stops reading.
//!
//! Usage: dxvmm-stdin < /dev/hvc0 > PIPE

use std::io::{self, Read, Write};
use std::process::ExitCode;

use dxvmm_protocol::stdin::{Decoded, Decoder};

fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        eprintln!("usage: dxvmm-stdin < CONSOLE > PIPE (decodes dxvmm's framed stdin)");
        return ExitCode::from(2);
    }
    let mut input = io::stdin().lock();
    let mut output = io::stdout().lock();
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut data = Vec::with_capacity(buf.len());
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("dxvmm-stdin: reading the console: {e}");
                return ExitCode::FAILURE;
            }
        };
        data.clear();
        let state = decoder.feed(&buf[..n], &mut data);
        // The command may have stopped reading: nothing more to deliver.
        if output
            .write_all(&data)
            .and_then(|()| output.flush())
            .is_err()
        {
            return ExitCode::SUCCESS;
        }
        if state == Decoded::End {
            return ExitCode::SUCCESS;
        }
    }
}
