//! What a tiny dispatch costs natively on the host's first adapter, one
//! queue submission each against several in one submission (one encoder,
//! or an encoder each): how much of a submission is wgpu's `queue.submit`,
//! which the backend's batches (docs/host-backend.md) share out.
//!
//! `cargo run --release -p dxvmm-host-backend --example submit_cost`

#[path = "../tests/common/direct.rs"]
mod direct;

use std::time::Instant;

fn main() {
    let Some(name) = dxvmm_host_backend::host_adapters()
        .first()
        .map(|a| a.name.clone())
    else {
        eprintln!("submit_cost: no Vulkan adapter");
        std::process::exit(1);
    };
    let d = direct::Direct::new(&name);
    let x = d.buffer(256);
    let p = d.pipeline(dxvmm_guest_tools::shaders::TINY);
    let bg = d.bind(&p, &[&x]);
    let dispatch = |enc: &mut wgpu::CommandEncoder| {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&p);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    };
    let encoder = || d.device.create_command_encoder(&Default::default());
    // Microseconds per dispatch of `n` dispatches, `k` per submission.
    let n = 20_000u32;
    let per_dispatch = |k: u32, one_encoder: bool| {
        d.dispatch(&p, &bg, [1, 1, 1]);
        d.wait();
        let t = Instant::now();
        for _ in 0..n / k {
            if one_encoder {
                let mut enc = encoder();
                (0..k).for_each(|_| dispatch(&mut enc));
                d.queue.submit([enc.finish()]);
            } else {
                d.queue.submit((0..k).map(|_| {
                    let mut enc = encoder();
                    dispatch(&mut enc);
                    enc.finish()
                }));
            }
        }
        d.wait();
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n / k * k)
    };
    println!("{name}: microseconds per tiny dispatch ({n} dispatches, best of 3)");
    let best = |k, one| {
        (0..3)
            .map(|_| per_dispatch(k, one))
            .fold(f64::MAX, f64::min)
    };
    println!("  1 per submission: {:.2}", best(1, true));
    for k in [4, 16, 64] {
        println!(
            "  {k} per submission: one encoder {:.2}, an encoder each {:.2}",
            best(k, true),
            best(k, false)
        );
    }
}
