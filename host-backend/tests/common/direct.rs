//! The native side of the guest/native and backend/native benchmarks: a
//! wgpu device of our own on a named adapter, with the few calls the
//! workloads need (storage buffers, a WGSL pipeline, a bind group of whole
//! buffers, one dispatch per submit, a wait for everything).
//!
//! Shared by host-backend's benchmark and vmm's dxgbench benchmark (through
//! `#[path]`), so both compare against the same native code.

#![allow(dead_code)]

pub struct Direct {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
}

impl Direct {
    /// A device on the Vulkan adapter called `name` (as `dxvmm gpus` names it).
    pub fn new(name: &str) -> Direct {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::VULKAN,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN));
        let adapter = adapters
            .into_iter()
            .find(|a| a.get_info().name == name)
            .expect("the backend's adapter");
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .expect("device");
        Direct { device, queue }
    }

    pub fn buffer(&self, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    pub fn pipeline(&self, src: &str) -> wgpu::ComputePipeline {
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: None,
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
        self.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: None,
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
    }

    /// Binds `bufs` whole, at bindings 0, 1, ... of group 0.
    pub fn bind(&self, p: &wgpu::ComputePipeline, bufs: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<_> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &p.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    /// One dispatch, one submit.
    pub fn dispatch(&self, p: &wgpu::ComputePipeline, bg: &wgpu::BindGroup, groups: [u32; 3]) {
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(p);
            pass.set_bind_group(0, bg, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        self.queue.submit([enc.finish()]);
    }

    /// Waits for everything submitted so far.
    pub fn wait(&self) {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .expect("poll");
    }
}
