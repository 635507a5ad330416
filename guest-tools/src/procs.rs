//! `dxgtest procs [N]`: processes that die holding driver objects leave
//! nothing on the host.
//!
//! N children each open `/dev/dxg`, an adapter and a device, say they are
//! ready and block. The parent checks that the host counts them, kills them
//! all with SIGKILL (no chance to clean up: the driver's file release must),
//! then polls HOST_OBJECTS until the counts are back to what they were
//! before the children, the parent's own process included: querying the
//! host makes the parent a host process too, so "nothing left" is "back to
//! the baseline", normally 1 process and 0 devices.

use std::time::{Duration, Instant};

use dxvmm_protocol::escape::DxgvHostObjects;
use libdxg::{Dxg, Error};

use crate::report::ObjectsReport;
use crate::sys::{self, Forked, Pipe};
use crate::tap::Tap;

/// How long the host may take to free a dead process's objects.
const SETTLE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

/// A child: its own file, adapter and device, kept until it is killed.
fn child(ready: &Pipe) -> ! {
    let setup = || -> Result<(), Error> {
        let dxg = Dxg::open()?;
        let adapters = dxg.adapters()?;
        let adapter = adapters.into_iter().next().ok_or(Error::BadAnswer {
            ioctl: "LX_DXENUMADAPTERS3",
            what: "no adapters".into(),
        })?;
        let device = adapter.create_device()?;
        // Held, not released: SIGKILL ends the process with them open.
        let _ = device.into_raw();
        let _ = adapter.into_raw();
        std::mem::forget(dxg);
        Ok(())
    };
    match setup() {
        Ok(()) => {
            let _ = sys::write_all(&ready.write, b"R");
            sys::sleep_forever()
        }
        Err(e) => {
            eprintln!("dxgtest procs: child: {e}");
            let _ = sys::write_all(&ready.write, b"F");
            sys::exit_child(1)
        }
    }
}

/// Runs the suite with `n` children; true when all is back to the baseline.
pub fn run(n: usize) -> bool {
    let mut tap = Tap::new();
    let setup = || -> Result<(Dxg, Pipe), String> {
        let dxg = Dxg::open().map_err(|e| e.to_string())?;
        let pipe = Pipe::new().map_err(|e| format!("pipe: {e}"))?;
        Ok((dxg, pipe))
    };
    let (dxg, ready) = match setup() {
        Ok(v) => v,
        Err(e) => {
            tap.not_ok("setup", &e);
            return tap.finish();
        }
    };
    let adapter = match dxg.adapters().map(|v| v.into_iter().next()) {
        Ok(Some(a)) => a,
        Ok(None) => {
            tap.not_ok("setup", "the driver lists no adapter");
            return tap.finish();
        }
        Err(e) => {
            tap.not_ok("setup", &e.to_string());
            return tap.finish();
        }
    };
    let Some(base) = tap.works("baseline HOST_OBJECTS", adapter.host_objects()) else {
        return tap.finish();
    };
    println!("# baseline: {}", ObjectsReport::from(&base).line());

    let mut pids = Vec::with_capacity(n);
    for _ in 0..n {
        match sys::fork() {
            Ok(Forked::Child) => child(&ready),
            Ok(Forked::Parent(pid)) => pids.push(pid),
            Err(e) => {
                tap.not_ok("fork", &e.to_string());
                break;
            }
        }
    }
    let mut marks = vec![0u8; pids.len()];
    let got = sys::read_full(&ready.read, &mut marks, Duration::from_secs(60));
    let ready_count = marks.iter().filter(|&&m| m == b'R').count();
    tap.check(&format!("{n} processes ready"), ready_count == n, || {
        format!("{ready_count} of {n} ready ({got:?})")
    });

    match adapter.host_objects() {
        Ok(o) => {
            let want_p = base.processes as usize + ready_count;
            let want_d = base.devices as usize + ready_count;
            tap.check(
                &format!("host counts them ({})", ObjectsReport::from(&o).line()),
                o.processes as usize >= want_p && o.devices as usize >= want_d,
                || format!("want at least processes={want_p} devices={want_d}"),
            );
        }
        Err(e) => tap.not_ok("host counts them", &e.to_string()),
    }

    for &pid in &pids {
        let _ = sys::kill9(pid);
    }
    for &pid in &pids {
        let _ = sys::wait(pid);
    }

    let start = Instant::now();
    let back = |o: &DxgvHostObjects| o.processes == base.processes && o.devices == base.devices;
    let last = loop {
        match adapter.host_objects() {
            Ok(o) if back(&o) || start.elapsed() >= SETTLE => break Ok(o),
            Ok(_) => std::thread::sleep(POLL),
            Err(e) => break Err(e),
        }
    };
    match last {
        Ok(o) => {
            let line = ObjectsReport::from(&o).line();
            tap.check(
                &format!(
                    "back to the baseline after {} ms ({line})",
                    start.elapsed().as_millis()
                ),
                back(&o),
                || {
                    format!(
                        "still {line} after {} s; baseline processes={} devices={}",
                        SETTLE.as_secs(),
                        base.processes,
                        base.devices
                    )
                },
            );
        }
        Err(e) => tap.not_ok("back to the baseline", &e.to_string()),
    }
    tap.finish()
}
