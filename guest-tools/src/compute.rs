//! `dxgtest compute`: real GPU work from inside the guest through libdxg's
//! user-mode driver, checked against the CPU; every ioctl of the compute
//! profile once with valid input (the conformance part); two processes at
//! once; a process killed in the middle of a submission; and bad input
//! that must fail while the device keeps working.

use std::time::{Duration, Instant};

use dxvmm_protocol::abi::{syncobject_type, D3dkmtHandle};
use dxvmm_protocol::cmdstream::{
    Command, DxgvCmdHeader, DxgvCmdStreamHeader, DXGV_CMDSTREAM_MAGIC,
};
use dxvmm_protocol::escape::{alloc_flags, DxgvAllocationDesc, DxgvHostObjects};
use libdxg::{
    Bind, Buffer, Commands, Error, Fence, Gpu, HwQueue, Pipeline, PAGE_SIZE, PIECEWISE_MIN,
};
use zerocopy::IntoBytes;

use crate::report::ObjectsReport;
use crate::shaders::*;
use crate::sys::{self, Forked, Pipe};
use crate::tap::Tap;

/// How long any one GPU wait of the suite may take.
const WAIT: Duration = Duration::from_secs(60);
/// How long the host may take to free a dead process's objects.
const SETTLE: Duration = Duration::from_secs(30);

type R<T> = Result<T, String>;

fn s(e: Error) -> String {
    e.to_string()
}

fn record(tap: &mut Tap, name: &str, r: R<()>) -> bool {
    match r {
        Ok(()) => {
            tap.ok(name);
            true
        }
        Err(e) => {
            tap.not_ok(name, &e);
            false
        }
    }
}

/// Runs `cmds` and waits for them.
fn run(gpu: &Gpu, cmds: &Commands) -> R<()> {
    let v = gpu.submit(cmds).map_err(s)?;
    gpu.wait(v, Some(WAIT)).map_err(s)
}

fn vector_add(gpu: &Gpu, p: &Pipeline, n: usize, seed: f32) -> R<()> {
    let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 + seed).collect();
    let b: Vec<f32> = (0..n).map(|i| (n - i) as f32 * 0.25).collect();
    let mut ba = Buffer::new(gpu, n as u64 * 4).map_err(s)?;
    let mut bb = Buffer::new(gpu, n as u64 * 4).map_err(s)?;
    let mut bc = Buffer::new(gpu, n as u64 * 4).map_err(s)?;
    ba.write_f32s(0, &a).map_err(s)?;
    bb.write_f32s(0, &b).map_err(s)?;
    let mut c = Commands::new();
    c.dispatch(
        p,
        [(n as u32).div_ceil(64), 1, 1],
        &[
            Bind::ro(0, &ba.all()),
            Bind::ro(1, &bb.all()),
            Bind::rw(2, &bc.all()),
        ],
    );
    run(gpu, &c)?;
    let got = bc.read_f32s().map_err(s)?;
    for i in 0..n {
        if got[i] != a[i] + b[i] {
            return Err(format!("c[{i}] = {}, want {}", got[i], a[i] + b[i]));
        }
    }
    Ok(())
}

fn matmul(gpu: &Gpu, p: &Pipeline, n: usize) -> R<()> {
    let a = matrix(n, 1);
    let b = matrix(n, 2);
    let ba = Buffer::with_data(gpu, a.as_bytes()).map_err(s)?;
    let bb = Buffer::with_data(gpu, b.as_bytes()).map_err(s)?;
    let mut bc = Buffer::new(gpu, (n * n * 4) as u64).map_err(s)?;
    let dims = Buffer::with_data(gpu, [n as u32, 0, 0, 0].as_bytes()).map_err(s)?;
    let mut c = Commands::new();
    c.dispatch(
        p,
        matmul_groups(n as u32),
        &[
            Bind::ro(0, &ba.all()),
            Bind::ro(1, &bb.all()),
            Bind::rw(2, &bc.all()),
            Bind::ro(3, &dims.all()),
        ],
    );
    run(gpu, &c)?;
    let want = cpu_matmul(&a, &b, n);
    let got = bc.read_f32s().map_err(s)?;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if g != w {
            return Err(format!("C[{}][{}] = {g}, want {w}", i / n, i % n));
        }
    }
    Ok(())
}

fn reduce(gpu: &Gpu, n: usize) -> R<()> {
    let p = Pipeline::from_wgsl(gpu, REDUCE, "main").map_err(s)?;
    let data: Vec<u32> = (0..n as u32)
        .map(|i| i.wrapping_mul(2654435761) >> 22)
        .collect();
    let want = data.iter().fold(0u32, |a, &x| a.wrapping_add(x));
    let bd = Buffer::with_data(gpu, data.as_bytes()).map_err(s)?;
    let mut total = Buffer::new(gpu, 4).map_err(s)?;
    let mut c = Commands::new();
    c.fill(&total.all(), 0).dispatch(
        &p,
        [256, 1, 1],
        &[Bind::ro(0, &bd.all()), Bind::rw(1, &total.all())],
    );
    run(gpu, &c)?;
    let got = total.read_u32s().map_err(s)?[0];
    if got != want {
        return Err(format!("sum {got}, want {want}"));
    }
    Ok(())
}

fn spirv(gpu: &Gpu) -> R<()> {
    let p = Pipeline::from_spirv(gpu, SCALE_SPV, "main").map_err(s)?;
    let n = 1000usize;
    let src: Vec<u32> = (0..n as u32).collect();
    let bs = Buffer::with_data(gpu, src.as_bytes()).map_err(s)?;
    let mut bd = Buffer::new(gpu, n as u64 * 4).map_err(s)?;
    let mut c = Commands::new();
    c.dispatch(
        &p,
        [(n as u32).div_ceil(64), 1, 1],
        &[Bind::ro(0, &bs.all()), Bind::rw(1, &bd.all())],
    );
    run(gpu, &c)?;
    let got = bd.read_u32s().map_err(s)?;
    match (0..n).find(|&i| got[i] != src[i] * 3 + 1) {
        Some(i) => Err(format!("dst[{i}] = {}, want {}", got[i], src[i] * 3 + 1)),
        None => Ok(()),
    }
}

fn compile_error(gpu: &Gpu) -> R<String> {
    match Pipeline::from_wgsl(gpu, BROKEN, "main") {
        Err(Error::Compile { message, .. }) if message.contains("no_such_value") => {
            Ok(message.lines().next().unwrap_or("").to_string())
        }
        Err(Error::Compile { message, .. }) => Err(format!(
            "the message does not name the bad identifier: {message:?}"
        )),
        Err(e) => Err(format!("not a compile error: {e}")),
        Ok(_) => Err("a broken shader compiled".into()),
    }
}

/// COPY, FILL and TIMESTAMP, and CPU writes that reach the GPU (UNLOCK2 on
/// submit) and GPU writes that reach the CPU (LOCK2 on read).
fn transfers(gpu: &Gpu) -> R<()> {
    let mut a = Buffer::new(gpu, 3 * PAGE_SIZE).map_err(s)?;
    let mut b = Buffer::new(gpu, 3 * PAGE_SIZE).map_err(s)?;
    let data: Vec<u8> = (0..3 * PAGE_SIZE).map(|i| (i % 253) as u8).collect();
    a.write_at(0, &data).map_err(s)?;
    let mut c = Commands::new();
    c.copy(&a.all(), &b.all()).map_err(s)?;
    c.fill(&a.range(PAGE_SIZE, 16).map_err(s)?, 0xdead_beef);
    c.timestamp(&b.range(8, 8).map_err(s)?).map_err(s)?;
    run(gpu, &c)?;
    let got = b.read().map_err(s)?.to_vec();
    if got[16..] != data[16..] || got[..8] != data[..8] {
        return Err("COPY: wrong bytes".into());
    }
    let ts = u64::from_le_bytes(got[8..16].try_into().unwrap_or_default());
    if ts == 0 {
        return Err("TIMESTAMP wrote 0".into());
    }
    let got = a.read_u32s().map_err(s)?;
    let at = (PAGE_SIZE / 4) as usize;
    if got[at..at + 4] != [0xdead_beef; 4] || got[at + 4] == 0xdead_beef {
        return Err(format!("FILL: {:x?}", &got[at..at + 5]));
    }
    // The CPU writes again after the GPU did: the new bytes must win.
    a.write_at(0, &[7; 8]).map_err(s)?;
    let mut c = Commands::new();
    c.copy(&a.range(0, 8).map_err(s)?, &b.range(0, 8).map_err(s)?)
        .map_err(s)?;
    run(gpu, &c)?;
    if b.read().map_err(s)?[..8] != [7; 8] {
        return Err("a CPU write after GPU work did not reach the GPU".into());
    }
    Ok(())
}

/// Large writes go to the GPU in pieces (UPLOAD commands) while the CPU
/// writes on: two in a row over the same pages, at odd offsets, a small one
/// into pages an UPLOAD took, then an UPLOAD by hand of bytes written after
/// the buffer was used; the GPU's copy must hold the last bytes each time.
fn piecewise_writes(gpu: &Gpu) -> R<()> {
    let size = PIECEWISE_MIN as u64 + 3 * PAGE_SIZE + 12;
    let mut big = Buffer::new(gpu, size).map_err(s)?;
    let mut out = Buffer::new(gpu, size).map_err(s)?;
    let mut want = vec![0u8; size as usize];
    let mut write = |big: &mut Buffer, at: usize, data: &[u8]| -> R<()> {
        big.write_at(at as u64, data).map_err(s)?;
        want[at..at + data.len()].copy_from_slice(data);
        Ok(())
    };
    let first: Vec<u8> = (0..PIECEWISE_MIN + 100).map(|i| (i % 251) as u8).collect();
    write(&mut big, 6, &first)?;
    let second: Vec<u8> = (0..PIECEWISE_MIN).map(|i| (i % 241) as u8 ^ 0x5a).collect();
    write(&mut big, PAGE_SIZE as usize + 2, &second)?;
    write(&mut big, 100, &[9; 16])?;
    let mut c = Commands::new();
    c.copy(&big.all(), &out.all()).map_err(s)?;
    run(gpu, &c)?;
    let got = out.read().map_err(s)?;
    if let Some(at) = got.iter().zip(&want).position(|(g, w)| g != w) {
        return Err(format!(
            "byte {at} of the GPU's copy: {} for {}",
            got[at], want[at]
        ));
    }
    // By hand, the buffer left locked: bytes an UPLOAD took are the GPU's
    // from then on; the CPU's later write (which the rules forbid) does not
    // reach the GPU with the rest of the pages at the next use.
    let page = 2 * PAGE_SIZE;
    big.write_at(page, &[0xab; 64]).map_err(s)?;
    let mut c = Commands::new();
    c.raw(Command::Upload {
        va: big.va() + page,
        size: PAGE_SIZE,
    });
    // Once it has run: the GPU may read the pages as late as that.
    let v = gpu.submit(&c).map_err(s)?;
    gpu.wait(v, None).map_err(s)?;
    big.write().map_err(s)?[page as usize..][..64].fill(0xcd);
    let mut c = Commands::new();
    c.raw(Command::Copy {
        src_va: big.va() + page - 64,
        dst_va: out.va() + page - 64,
        size: 128,
    });
    run(gpu, &c)?;
    out.invalidate();
    let got = &out.read().map_err(s)?[page as usize - 64..][..128];
    if got[..64] != want[page as usize - 64..page as usize] || got[64..] != [0xab; 64] {
        return Err(format!("UPLOAD by hand: the GPU's copy holds {got:x?}"));
    }
    Ok(())
}

/// Fences: CPU signal seen through the mapped slot; a CPU wait that times
/// out; FENCE_WAIT in a stream released by a CPU signal; FENCE_SIGNAL.
const ASYNC_SUBMIT: &str = "/sys/module/dxgkrnl/parameters/async_submit";

/// 3,000 submissions back to back, each a tiny dispatch (a counter) and a
/// fill of one of 256 words with its own index: several trips around the
/// command ring, so a stream rewritten before the host took it would show
/// as a wrong word or count.
fn many_submissions(gpu: &Gpu) -> R<()> {
    const N: u32 = 3000;
    let mut counter = Buffer::new(gpu, 256).map_err(s)?;
    let mut log = Buffer::new(gpu, 256 * 4).map_err(s)?;
    let p = Pipeline::from_wgsl(gpu, TINY, "main").map_err(s)?;
    let mut v = 0;
    for i in 0..N {
        let mut c = Commands::new();
        c.dispatch(&p, [1, 1, 1], &[Bind::rw(0, &counter.all())]);
        c.fill(&log.range(u64::from(i % 256) * 4, 4).map_err(s)?, i);
        v = gpu.submit(&c).map_err(s)?;
    }
    gpu.wait(v, Some(WAIT)).map_err(s)?;
    let count = counter.read_u32s().map_err(s)?[0];
    if count != N {
        return Err(format!("the counter is {count}, want {N}"));
    }
    let words = log.read_u32s().map_err(s)?;
    for (j, &w) in words.iter().enumerate() {
        let want = (N - 1 - j as u32) / 256 * 256 + j as u32;
        if w != want {
            return Err(format!("word {j} is {w}, want {want}"));
        }
    }
    Ok(())
}

/// Four threads of this process, each with its own device and context,
/// submit 500 tiny dispatches at once and sync now and then: the driver's
/// accounting of asynchronous submissions is per process, so each thread's
/// sync waits only for what was queued before it while the others go on.
fn threads_submitting() -> R<()> {
    const PER_THREAD: u32 = 500;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| -> R<()> {
                    let gpu = Gpu::open().map_err(s)?;
                    let mut counter = Buffer::new(&gpu, 256).map_err(s)?;
                    let p = Pipeline::from_wgsl(&gpu, TINY, "main").map_err(s)?;
                    let mut c = Commands::new();
                    c.dispatch(&p, [1, 1, 1], &[Bind::rw(0, &counter.all())]);
                    let mut v = 0;
                    for i in 0..PER_THREAD {
                        v = gpu.submit(&c).map_err(s)?;
                        if i % 100 == 99 {
                            gpu.sync().map_err(s)?;
                        }
                    }
                    gpu.wait(v, Some(WAIT)).map_err(s)?;
                    let n = counter.read_u32s().map_err(s)?[0];
                    if n != PER_THREAD {
                        return Err(format!("a thread's counter is {n}, want {PER_THREAD}"));
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|_| Err("a thread panicked".into())))
    })
}

/// Submissions go without waiting (the driver's `async_submit`, as WSL
/// sends them): a refused one fails the process's next call, once; with
/// the parameter off, the submission itself fails.
fn async_submission(tap: &mut Tap, gpu: &Gpu, add: &Pipeline) {
    record(
        tap,
        "3,000 submissions back to back around the command ring: all carried out, in order",
        many_submissions(gpu),
    );
    record(
        tap,
        "four threads submitting 500 each at once, syncing now and then",
        threads_submitting(),
    );
    let param = std::fs::read_to_string(ASYNC_SUBMIT).unwrap_or_default();
    if !tap.check("async_submit is on by default", param.trim() == "Y", || {
        format!("{ASYNC_SUBMIT}: {param:?}")
    }) {
        return;
    }
    let dxg = gpu.dxg();
    let bad = || dxg.submit_command_raw(gpu.context(), 0x7000_0000_0000, 64);
    tap.works(
        "async: a submission the host will refuse returns at once",
        bad(),
    );
    tap.refused_with(
        "async: the process's next call returns the refusal",
        gpu.sync(),
        libc::EINVAL,
    );
    tap.works("async: the call after that succeeds", gpu.sync());
    // Synchronous submission, while the parameter is off.
    if let Err(e) = std::fs::write(ASYNC_SUBMIT, "0") {
        tap.not_ok("async_submit=0", &format!("{ASYNC_SUBMIT}: {e}"));
        return;
    }
    tap.refused_with(
        "async_submit=0: a refused submission fails itself",
        bad(),
        libc::EINVAL,
    );
    record(
        tap,
        "async_submit=0: work runs as before",
        vector_add(gpu, add, 1000, 2.0),
    );
    if let Err(e) = std::fs::write(ASYNC_SUBMIT, "1") {
        tap.not_ok("async_submit back on", &format!("{ASYNC_SUBMIT}: {e}"));
    }
}

fn fences(tap: &mut Tap, gpu: &Gpu) {
    let r = (|| -> R<()> {
        let f = Fence::new(gpu, 5).map_err(s)?;
        if f.value() != 5 {
            return Err(format!("initial value {} in the slot, want 5", f.value()));
        }
        f.signal(9).map_err(s)?;
        if f.value() != 9 {
            return Err(format!("value {} after a CPU signal of 9", f.value()));
        }
        f.wait(9, Some(WAIT)).map_err(s)
    })();
    record(
        tap,
        "fence: initial value and CPU signal read from the mapped slot",
        r,
    );

    let r = (|| -> R<()> {
        let f = Fence::new(gpu, 0).map_err(s)?;
        let t = Instant::now();
        match f.wait(1, Some(Duration::from_millis(200))) {
            Err(Error::Timeout { .. }) if t.elapsed() >= Duration::from_millis(150) => Ok(()),
            Err(Error::Timeout { .. }) => Err(format!("timed out early, after {:?}", t.elapsed())),
            other => Err(format!("wanted a timeout, got {other:?}")),
        }
    })();
    record(
        tap,
        "fence: a CPU wait on a fence nobody signals times out",
        r,
    );

    let r = (|| -> R<()> {
        let gate = Fence::new(gpu, 0).map_err(s)?;
        let done = Fence::new(gpu, 0).map_err(s)?;
        let mut x = Buffer::new(gpu, 16).map_err(s)?;
        let mut c = Commands::new();
        c.wait(&gate, 1).fill(&x.all(), 42).signal(&done, 7);
        gpu.submit(&c).map_err(s)?;
        std::thread::sleep(Duration::from_millis(100));
        if done.value() != 0 {
            return Err("work behind FENCE_WAIT ran before the fence was signalled".into());
        }
        gate.signal(1).map_err(s)?;
        done.wait(7, Some(WAIT)).map_err(s)?;
        if x.read_u32s().map_err(s)? != [42; 4] {
            return Err("the fill behind the wait did not run".into());
        }
        Ok(())
    })();
    record(
        tap,
        "fence: FENCE_WAIT holds the stream until a CPU signal; FENCE_SIGNAL after it",
        r,
    );

    record(tap, "WAITFORSYNCHRONIZATIONOBJECTFROMCPU with async_event: the eventfd is signalled when the fence gets there (at once if it is there, and when the fence is destroyed), not before; a descriptor that is not an eventfd is refused", async_waits(gpu));
}

/// The eventfd form of a CPU wait, as WSL's dxgkrnl has it.
fn async_waits(gpu: &Gpu) -> R<()> {
    use std::os::fd::AsRawFd;
    let dxg = gpu.dxg();
    let event = sys::eventfd().map_err(|e| e.to_string())?;
    let fd = event.as_raw_fd() as u64;
    let signalled = |within: Duration| -> R<bool> {
        let mut b = [0u8; 8];
        match sys::read_full(&event, &mut b, within) {
            Ok(8) if u64::from_ne_bytes(b) == 1 => Ok(true),
            Ok(n) => Err(format!("the eventfd read {n} bytes {b:?}")),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    };
    let f = Fence::new(gpu, 0).map_err(s)?;
    dxg.wait_from_cpu_raw(gpu.device(), &[f.handle()], &[2], false, fd)
        .map_err(s)?;
    f.signal(1).map_err(s)?;
    if signalled(Duration::from_millis(100))? {
        return Err("signalled at 1 of 2".into());
    }
    f.signal(2).map_err(s)?;
    if !signalled(WAIT)? {
        return Err("not signalled when the fence reached 2".into());
    }
    dxg.wait_from_cpu_raw(gpu.device(), &[f.handle()], &[2], false, fd)
        .map_err(s)?;
    if !signalled(WAIT)? {
        return Err("not signalled for a value already reached".into());
    }
    dxg.wait_from_cpu_raw(gpu.device(), &[f.handle()], &[9], false, fd)
        .map_err(s)?;
    drop(f);
    if !signalled(WAIT)? {
        return Err("not signalled when its fence was destroyed".into());
    }
    let pipe = Pipe::new().map_err(|e| e.to_string())?;
    let g = Fence::new(gpu, 0).map_err(s)?;
    let not_eventfd = pipe.read.as_raw_fd() as u64;
    for bad in [not_eventfd, 1 << 40] {
        if dxg
            .wait_from_cpu_raw(gpu.device(), &[g.handle()], &[1], false, bad)
            .is_ok()
        {
            return Err(format!("async_event {bad:#x} was accepted"));
        }
    }
    Ok(())
}

/// Each ioctl of §2.6 once with valid input, through the raw calls.
fn conformance(tap: &mut Tap, gpu: &Gpu) {
    let dxg = gpu.dxg();
    let dev = gpu.device();
    let desc = DxgvAllocationDesc {
        size: 2 * PAGE_SIZE,
        alignment: 0,
        flags: alloc_flags::CPU_VISIBLE,
    };
    let gpu_only = DxgvAllocationDesc {
        size: PAGE_SIZE,
        alignment: 256,
        flags: 0,
    };
    let allocs = match tap.works(
        "CREATEALLOCATION: two allocations (CPU-visible, GPU-only)",
        dxg.create_allocations_raw(dev, &[desc, gpu_only]),
    ) {
        Some(a) => a,
        None => return,
    };
    tap.works(
        "QUERYALLOCATIONRESIDENCY",
        dxg.query_allocation_residency_raw(dev, &allocs),
    );
    tap.works(
        "MAKERESIDENT",
        dxg.make_resident_raw(gpu.paging_queue(), &allocs),
    );
    tap.works("EVICT", dxg.evict_raw(dev, &allocs));
    if let Some(addr) = tap.works("LOCK2", dxg.lock2_raw(dev, allocs[0])) {
        // SAFETY: LOCK2 mapped the allocation's two pages at `addr`; no
        // other reference to them exists in this process.
        let page = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, 8) };
        page.copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    }
    tap.works("UNLOCK2", dxg.unlock2_raw(dev, allocs[0]));
    tap.refused(
        "LOCK2 of a GPU-only allocation",
        dxg.lock2_raw(dev, allocs[1]),
    );
    if let Some(r) = tap.works(
        "RESERVEGPUVIRTUALADDRESS",
        dxg.reserve_gpu_va_raw(dev, 0, 0, 0, 4 * PAGE_SIZE),
    ) {
        tap.works(
            "MAPGPUVIRTUALADDRESS inside the reservation",
            dxg.map_gpu_va_raw(gpu.paging_queue(), allocs[0], r.va, 0, 0, 0, 2),
        );
        tap.works(
            "FREEGPUVIRTUALADDRESS",
            dxg.free_gpu_va_raw(dev, r.va, 4 * PAGE_SIZE),
        );
    }
    // SYSMEM: the process's own pages back an allocation.
    let r = (|| -> R<()> {
        let mem = sys::Mapping::new(PAGE_SIZE as usize, libc::PROT_READ | libc::PROT_WRITE)
            .map_err(|e| e.to_string())?;
        let d = DxgvAllocationDesc {
            size: PAGE_SIZE,
            alignment: 0,
            flags: alloc_flags::CPU_VISIBLE,
        };
        // SAFETY: `mem` is a page of ours, used by nothing else, and it
        // outlives the allocation (destroyed below before `mem` drops).
        let h =
            unsafe { dxg.create_allocations_sysmem_raw(dev, &[d], &[mem.addr()]) }.map_err(s)?;
        let addr = dxg.lock2_raw(dev, h[0]);
        dxg.destroy_allocations_raw(dev, &h).map_err(s)?;
        match addr {
            Ok(a) if a == mem.addr() => Ok(()),
            Ok(a) => Err(format!(
                "LOCK2 gave {a:#x}, the pages are at {:#x}",
                mem.addr()
            )),
            Err(e) => Err(s(e)),
        }
    })();
    record(
        tap,
        "CREATEALLOCATION with sysmem: LOCK2 returns those pages",
        r,
    );
    tap.works(
        "DESTROYALLOCATION2",
        dxg.destroy_allocations_raw(dev, &allocs),
    );

    if let Some(f) = tap.works(
        "CREATESYNCHRONIZATIONOBJECT2 (monitored fence)",
        dxg.create_monitored_fence_raw(dev, 3),
    ) {
        tap.check(
            "CREATESYNCHRONIZATIONOBJECT2 maps the fence value",
            f.cpu_va != 0,
            || "no fence_cpu_virtual_address".into(),
        );
        tap.works(
            "SIGNALSYNCHRONIZATIONOBJECTFROMCPU",
            dxg.signal_from_cpu_raw(dev, &[f.handle], &[4]),
        );
        tap.works(
            "SIGNALSYNCHRONIZATIONOBJECTFROMGPU",
            dxg.signal_from_gpu_raw(gpu.context(), &[f.handle], &[5]),
        );
        tap.works(
            "SIGNALSYNCHRONIZATIONOBJECTFROMGPU2",
            dxg.signal_from_gpu2_raw(&[gpu.context()], &[f.handle], &[6]),
        );
        tap.works(
            "WAITFORSYNCHRONIZATIONOBJECTFROMGPU",
            dxg.wait_from_gpu_raw(gpu.context(), &[f.handle], &[6]),
        );
        tap.works(
            "WAITFORSYNCHRONIZATIONOBJECTFROMCPU",
            dxg.wait_from_cpu_raw(dev, &[f.handle], &[6], false, 0),
        );
        tap.works(
            "DESTROYSYNCHRONIZATIONOBJECT",
            dxg.destroy_sync_object_raw(f.handle),
        );
    }
    let r = dxg.create_sync_object_raw(dev, syncobject_type::SEMAPHORE, 0);
    if let Ok(f) = &r {
        let _ = dxg.destroy_sync_object_raw(f.handle);
    }
    tap.refused("CREATESYNCHRONIZATIONOBJECT2 of a semaphore", r);

    if let Some(ctx) = tap.works(
        "CREATECONTEXTVIRTUAL",
        dxg.create_context_raw(dev, Default::default()),
    ) {
        tap.works("DESTROYCONTEXT", dxg.destroy_context_raw(ctx));
    }
    if let Some(q) = tap.works("CREATEPAGINGQUEUE", dxg.create_paging_queue_raw(dev)) {
        tap.works("DESTROYPAGINGQUEUE", dxg.destroy_paging_queue_raw(q.handle));
    }
    let r = (|| -> R<()> {
        let q = HwQueue::new(gpu).map_err(s)?;
        let mut x = Buffer::new(gpu, 64).map_err(s)?;
        let mut c = Commands::new();
        c.fill(&x.all(), 0x1234);
        let v = q.submit(&c).map_err(s)?;
        q.wait(v, Some(WAIT)).map_err(s)?;
        if q.progress() < v {
            return Err(format!("progress fence at {}, want {v}", q.progress()));
        }
        if x.read_u32s().map_err(s)? != [0x1234; 16] {
            return Err("the queue's fill did not land".into());
        }
        Ok(())
    })();
    record(
        tap,
        "CREATEHWQUEUE, SUBMITCOMMANDTOHWQUEUE (progress fence advances), DESTROYHWQUEUE",
        r,
    );
}

/// What a process with its own Gpu checks in a child: a few vector adds.
fn child_work(seed: f32) -> R<()> {
    let gpu = Gpu::open().map_err(s)?;
    let p = Pipeline::from_wgsl(&gpu, VECTOR_ADD, "main").map_err(s)?;
    for i in 0..10 {
        vector_add(&gpu, &p, 4096 + i * 64, seed + i as f32)?;
    }
    Ok(())
}

fn two_processes(tap: &mut Tap) {
    let mut pids = Vec::new();
    for k in 0..2 {
        match sys::fork() {
            Ok(Forked::Child) => {
                let r = child_work(1000.0 * (k + 1) as f32);
                if let Err(e) = &r {
                    eprintln!("dxgtest compute: child {k}: {e}");
                }
                sys::exit_child(i32::from(r.is_err()))
            }
            Ok(Forked::Parent(pid)) => pids.push(pid),
            Err(e) => tap.not_ok("two processes", &format!("fork: {e}")),
        }
    }
    // Wait for every child, not only up to the first that failed.
    let results: Vec<bool> = pids
        .iter()
        .map(|&p| sys::wait(p).map(sys::exited_ok).unwrap_or(false))
        .collect();
    let ok = results.iter().all(|&r| r);
    tap.check(
        "two processes use the GPU at once and both get right results",
        ok && pids.len() == 2,
        || "a child failed (see stderr)".into(),
    );
}

/// Waits until the host's object counts are back to `base` (all kinds).
fn settle(gpu: &Gpu, base: &DxgvHostObjects) -> R<DxgvHostObjects> {
    let start = Instant::now();
    let same = |o: &DxgvHostObjects| {
        (
            o.processes,
            o.devices,
            o.contexts,
            o.allocations,
            o.sync_objects,
            o.paging_queues,
            o.hw_queues,
            o.pipelines,
        ) == (
            base.processes,
            base.devices,
            base.contexts,
            base.allocations,
            base.sync_objects,
            base.paging_queues,
            base.hw_queues,
            base.pipelines,
        )
    };
    loop {
        let o = gpu.host_objects().map_err(s)?;
        if same(&o) {
            return Ok(o);
        }
        if start.elapsed() >= SETTLE {
            return Err(format!(
                "still {} after {} s; before: {}",
                ObjectsReport::from(&o).line(),
                SETTLE.as_secs(),
                ObjectsReport::from(base).line()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn killed_child(ready: &Pipe, rounds: u32) -> ! {
    let r = (|| -> R<()> {
        let gpu = Gpu::open().map_err(s)?;
        let p = Pipeline::from_wgsl(&gpu, SPIN, "main").map_err(s)?;
        let params = Buffer::with_data(&gpu, [rounds, 0, 0, 0].as_bytes()).map_err(s)?;
        let out = Buffer::new(&gpu, 64 * 1024 * 4).map_err(s)?;
        let mut c = Commands::new();
        c.dispatch(
            &p,
            [1024, 1, 1],
            &[Bind::ro(0, &params.all()), Bind::rw(1, &out.all())],
        );
        gpu.submit(&c).map_err(s)?;
        gpu.submit(&c).map_err(s)?;
        std::mem::forget((gpu, p, params, out));
        Ok(())
    })();
    match r {
        Ok(()) => {
            let _ = sys::write_all(&ready.write, b"R");
            sys::sleep_forever()
        }
        Err(e) => {
            eprintln!("dxgtest compute: killed child: {e}");
            let _ = sys::write_all(&ready.write, b"F");
            sys::exit_child(1)
        }
    }
}

fn killed_mid_submission(tap: &mut Tap, gpu: &Gpu, p: &Pipeline) {
    let name = "a process killed with a long dispatch in flight leaves no host objects";
    let base = match gpu.host_objects() {
        Ok(b) => b,
        Err(e) => {
            tap.not_ok(name, &e.to_string());
            return;
        }
    };
    let Ok(ready) = Pipe::new() else {
        tap.not_ok(name, "pipe failed");
        return;
    };
    let rounds = std::env::var("DXGTEST_SPIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000u32);
    let pid = match sys::fork() {
        Ok(Forked::Child) => killed_child(&ready, rounds),
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => {
            tap.not_ok(name, &format!("fork: {e}"));
            return;
        }
    };
    let mut mark = [0u8; 1];
    let got = sys::read_full(&ready.read, &mut mark, WAIT);
    let _ = sys::kill9(pid);
    let _ = sys::wait(pid);
    if mark[0] != b'R' {
        tap.not_ok(name, &format!("the child did not submit ({got:?})"));
        return;
    }
    match settle(gpu, &base) {
        Ok(o) => tap.ok(&format!("{name} ({})", ObjectsReport::from(&o).line())),
        Err(e) => tap.not_ok(name, &e),
    }
    record(
        tap,
        "the GPU works after the killed process",
        vector_add(gpu, p, 4096, 3.0),
    );
}

/// Blocks a thread in a CPU wait for value 1 on the fence `make` returns,
/// then drops the owner `make` returned with it (destroying the fence) and
/// checks that the wait ends with ENOENT. A wait that never ends fails the
/// case instead of hanging the suite; its thread is left blocked (the
/// process exit ends it).
fn abandoned_wait<O>(gpu: &Gpu, make: impl FnOnce(&Gpu) -> R<(D3dkmtHandle, O)>) -> R<()> {
    let (h, owner) = make(gpu)?;
    let waiter_gpu = gpu.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = waiter_gpu
            .dxg()
            .wait_from_cpu_raw(waiter_gpu.device(), &[h], &[1], false, 0);
        let _ = tx.send(r.map_err(|e| e.errno()));
    });
    std::thread::sleep(Duration::from_millis(100));
    drop(owner);
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Err(Some(e))) if e.0 == libc::ENOENT => Ok(()),
        Ok(Err(e)) => Err(format!("the wait failed with {e:?}, not ENOENT")),
        Ok(Ok(())) => Err("the wait succeeded although the fence never reached 1".into()),
        Err(_) => Err("the wait was still blocked 10 s after its fence was destroyed".into()),
    }
}

/// A stream with a valid header around `body`, `count` commands.
fn stream_bytes(count: u32, body: &[u8]) -> Vec<u8> {
    let mut v = DxgvCmdStreamHeader {
        magic: DXGV_CMDSTREAM_MAGIC,
        version: 1,
        flags: 0,
        size: (DxgvCmdStreamHeader::SIZE + body.len()) as u32,
        command_count: count,
    }
    .as_bytes()
    .to_vec();
    v.extend_from_slice(body);
    v
}

/// Bad input from inside the guest: each must fail, and the device must
/// still run a vector add afterwards.
fn bad_input(tap: &mut Tap, gpu: &Gpu, p: &Pipeline) {
    let still = |tap: &mut Tap, what: &str| {
        record(
            tap,
            &format!("{what}: the GPU still works"),
            vector_add(gpu, p, 256, 1.0),
        );
    };
    let Ok(buf) = Buffer::new(gpu, 2 * PAGE_SIZE) else {
        tap.not_ok("bad input: setup", "buffer");
        return;
    };
    let va = buf.va();
    let size = 2 * PAGE_SIZE;
    let submits: Vec<(&str, Command)> = vec![
        (
            "COPY past the end of its allocation",
            Command::Copy {
                src_va: va,
                dst_va: va + size - 64,
                size: 128,
            },
        ),
        (
            "FILL of a range that starts inside and ends outside the mapping",
            Command::Fill {
                dst_va: va + size - 4,
                size: 4096,
                value: 0,
            },
        ),
        (
            "FILL at a GPU VA outside any mapping",
            Command::Fill {
                dst_va: 0x7000_0000_0000,
                size: 64,
                value: 0,
            },
        ),
        (
            "COPY from GPU VA 0",
            Command::Copy {
                src_va: 0,
                dst_va: va,
                size: 64,
            },
        ),
        (
            "TIMESTAMP outside any mapping",
            Command::Timestamp {
                dst_va: 0x7000_0000_1000,
            },
        ),
        (
            "DISPATCH of a pipeline that does not exist",
            Command::Dispatch {
                pipeline: 0x0dea_d000,
                group_counts: [1, 1, 1],
                bindings: vec![],
            },
        ),
        (
            "DISPATCH binding a range outside any mapping",
            Command::Dispatch {
                pipeline: p.id(),
                group_counts: [1, 1, 1],
                bindings: vec![dxvmm_protocol::cmdstream::Binding {
                    binding: 0,
                    read_only: true,
                    va: 0x7000_0000_0000,
                    size: 256,
                }],
            },
        ),
        (
            "UPLOAD past the end of its allocation",
            Command::Upload {
                va: va + size - 64,
                size: 128,
            },
        ),
        (
            "UPLOAD outside any mapping",
            Command::Upload {
                va: 0x7000_0000_0000,
                size: 64,
            },
        ),
        (
            "FENCE_SIGNAL of a fence handle that does not exist",
            Command::FenceSignal {
                sync_object: D3dkmtHandle(0x4242_4240),
                value: 1,
            },
        ),
    ];
    for (what, cmd) in submits {
        let mut c = Commands::new();
        c.raw(cmd);
        let r = gpu.submit(&c).and_then(|_| gpu.sync());
        tap.refused(&format!("submit: {what}"), r);
    }
    still(tap, "bad command addresses");

    let fill = Command::Fill {
        dst_va: va,
        size: 64,
        value: 1,
    };
    let mut good = Vec::new();
    fill.encode_into(&mut good);
    let mut bad_op = good.clone();
    bad_op[0] = 99;
    let mut bad_len = good.clone();
    bad_len[4] = 24;
    let mut bad_flags = good.clone();
    bad_flags[2] = 1;
    let mut wrong_magic = stream_bytes(1, &good);
    wrong_magic[0] ^= 0xff;
    let mut short_size = stream_bytes(1, &good);
    short_size[8] -= 8;
    let raw: Vec<(&str, Vec<u8>)> = vec![
        ("an unknown opcode", stream_bytes(1, &bad_op)),
        (
            "a command whose size is not its body's",
            stream_bytes(1, &bad_len),
        ),
        ("command flags that are not 0", stream_bytes(1, &bad_flags)),
        ("a wrong stream magic", wrong_magic),
        ("a stream size other than the submitted length", short_size),
        (
            "more commands than the stream holds",
            stream_bytes(2, &good),
        ),
        ("a truncated command", stream_bytes(1, &good[..16])),
        (
            "an empty stream",
            stream_bytes(0, &[]).into_iter().take(8).collect(),
        ),
        (
            "a bare command header",
            DxgvCmdHeader {
                opcode: 2,
                flags: 0,
                size: 8,
            }
            .as_bytes()
            .to_vec(),
        ),
    ];
    for (what, bytes) in raw {
        tap.refused(&format!("stream with {what}"), gpu.submit_bytes(&bytes));
    }
    still(tap, "malformed streams");

    let dxg = gpu.dxg();
    let ctx = gpu.context();
    let cb = gpu.command_buffer_va();
    // A refusal comes back from the submission or, sent asynchronously,
    // from the next call.
    let settled = |r: Result<(), Error>| r.and_then(|()| gpu.sync());
    tap.refused(
        "SUBMITCOMMAND of a stream at an unmapped GPU VA",
        settled(dxg.submit_command_raw(ctx, 0x7000_0000_0000, 64)),
    );
    tap.refused(
        "SUBMITCOMMAND with a length past the command buffer's mapping",
        settled(dxg.submit_command_raw(ctx, cb, 64 << 20)),
    );
    tap.refused(
        "SUBMITCOMMAND with length 0",
        settled(dxg.submit_command_raw(ctx, cb, 0)),
    );
    tap.refused(
        "SUBMITCOMMAND to a context that does not exist",
        dxg.submit_command_raw(D3dkmtHandle(0x4242_4240), cb, 64),
    );
    still(tap, "bad submissions");

    // Destroyed fences.
    if let Ok(f) = dxg.create_monitored_fence_raw(gpu.device(), 0) {
        let _ = dxg.destroy_sync_object_raw(f.handle);
        tap.refused(
            "CPU wait on a destroyed fence",
            dxg.wait_from_cpu_raw(gpu.device(), &[f.handle], &[1], false, 0),
        );
        tap.refused(
            "CPU signal of a destroyed fence",
            dxg.signal_from_cpu_raw(gpu.device(), &[f.handle], &[1]),
        );
        tap.refused(
            "GPU wait on a destroyed fence",
            dxg.wait_from_gpu_raw(ctx, &[f.handle], &[1]),
        );
        let mut c = Commands::new();
        c.raw(Command::FenceWait {
            sync_object: f.handle,
            value: 1,
        });
        tap.refused(
            "FENCE_WAIT on a destroyed fence",
            gpu.submit(&c).and_then(|_| gpu.sync()),
        );
    } else {
        tap.not_ok("destroyed fences", "could not create a fence");
    }
    // A fence destroyed while a CPU wait is pending, by itself or with its
    // hardware queue: the wait must end, with ENOENT (§2.6.8).
    let r = abandoned_wait(gpu, |gpu| {
        let f = Fence::new(gpu, 0).map_err(s)?;
        let h = f.handle();
        Ok((h, f))
    });
    record(
        tap,
        "a CPU wait ends with ENOENT when its fence is destroyed",
        r,
    );
    let r = abandoned_wait(gpu, |gpu| {
        let q = HwQueue::new(gpu).map_err(s)?;
        let h = q.progress_fence();
        Ok((h, q))
    });
    record(
        tap,
        "a CPU wait on a hardware queue's fence ends with ENOENT when the queue is destroyed",
        r,
    );
    still(tap, "destroyed fences");

    // Allocations.
    let descs = [
        ("size 0", 0u64, 0u32, alloc_flags::CPU_VISIBLE),
        ("size not a multiple of 4", 6, 0, alloc_flags::CPU_VISIBLE),
        (
            "alignment not a power of two",
            4096,
            3,
            alloc_flags::CPU_VISIBLE,
        ),
        (
            "alignment over 64 KiB",
            4096,
            1 << 20,
            alloc_flags::CPU_VISIBLE,
        ),
        ("unknown flags", 4096, 0, 0x80),
    ];
    for (what, size, alignment, flags) in descs {
        let r = dxg.create_allocations_raw(
            gpu.device(),
            &[DxgvAllocationDesc {
                size,
                alignment,
                flags,
            }],
        );
        if let Ok(h) = &r {
            let _ = dxg.destroy_allocations_raw(gpu.device(), h);
        }
        tap.refused(&format!("CREATEALLOCATION with {what}"), r);
    }
    if let Ok(h) = dxg.create_allocations_raw(
        gpu.device(),
        &[DxgvAllocationDesc {
            size: 4096,
            alignment: 0,
            flags: alloc_flags::CPU_VISIBLE,
        }],
    ) {
        let _ = dxg.destroy_allocations_raw(gpu.device(), &h);
        tap.refused(
            "LOCK2 of a destroyed allocation",
            dxg.lock2_raw(gpu.device(), h[0]),
        );
        tap.refused(
            "MAPGPUVIRTUALADDRESS of a destroyed allocation",
            dxg.map_gpu_va_raw(gpu.paging_queue(), h[0], 0, 0, 0, 0, 1),
        );
    }
    tap.refused(
        "MAPGPUVIRTUALADDRESS of more pages than the allocation has",
        dxg.map_gpu_va_raw(gpu.paging_queue(), buf.handle(), 0, 0, 0, 1, 2),
    );
    tap.refused(
        "FREEGPUVIRTUALADDRESS of a range that was never mapped",
        dxg.free_gpu_va_raw(gpu.device(), 0x7000_0000_0000, PAGE_SIZE),
    );
    still(tap, "bad allocations");
}

/// Runs the suite; writes JUnit XML to `junit` if given.
pub fn run_suite(junit: Option<&str>) -> bool {
    let mut tap = Tap::new();
    let pass = suite(&mut tap);
    if let Some(path) = junit {
        if let Err(e) = std::fs::write(path, tap.junit("compute")) {
            eprintln!("dxgtest: {path}: {e}");
            return false;
        }
    }
    pass
}

fn suite(tap: &mut Tap) -> bool {
    let Some(gpu) = tap.works(
        "open: adapter, device, paging queue, context, timeline fence, command buffer",
        Gpu::open(),
    ) else {
        return tap.finish();
    };
    println!("# adapter: {}", gpu.info().name());
    let base = gpu.host_objects().ok();
    let Some(add) = tap.works(
        "CREATE_PIPELINE escape: vector add (WGSL)",
        Pipeline::from_wgsl(&gpu, VECTOR_ADD, "main"),
    ) else {
        return tap.finish();
    };
    record(
        tap,
        "vector add of 100,000 f32",
        vector_add(&gpu, &add, 100_000, 0.0),
    );
    if let Some(mm) = tap.works(
        "CREATE_PIPELINE escape: matrix multiply (WGSL)",
        Pipeline::from_wgsl(&gpu, MATMUL, "main"),
    ) {
        record(tap, "matrix multiply 64x64", matmul(&gpu, &mm, 64));
        record(tap, "matrix multiply 256x256", matmul(&gpu, &mm, 256));
        record(
            tap,
            "matrix multiply 100x100 (partial tiles)",
            matmul(&gpu, &mm, 100),
        );
    }
    record(
        tap,
        "reduction: sum of 1,048,576 u32 (workgroup reduce + atomics)",
        reduce(&gpu, 1 << 20),
    );
    record(
        tap,
        "SPIR-V pipeline (built with naga at build time)",
        spirv(&gpu),
    );
    match compile_error(&gpu) {
        Ok(first) => tap.ok(&format!(
            "a shader that does not compile returns the compiler's message ({first})"
        )),
        Err(e) => tap.not_ok(
            "a shader that does not compile returns the compiler's message",
            &e,
        ),
    }
    record(
        tap,
        "COPY, FILL, TIMESTAMP; CPU and GPU writes both ways",
        transfers(&gpu),
    );
    record(
        tap,
        "large writes handed to the GPU in pieces (UPLOAD) as they are written",
        piecewise_writes(&gpu),
    );
    async_submission(tap, &gpu, &add);
    fences(tap, &gpu);
    conformance(tap, &gpu);
    two_processes(tap);
    killed_mid_submission(tap, &gpu, &add);
    bad_input(tap, &gpu, &add);

    // Everything this process made and dropped is gone from the host.
    drop(add);
    if let Some(base) = base {
        match settle(&gpu, &base) {
            Ok(o) => tap.ok(&format!(
                "no host objects left behind ({})",
                ObjectsReport::from(&o).line()
            )),
            Err(e) => tap.not_ok("no host objects left behind", &e),
        }
    }
    tap.finish()
}
