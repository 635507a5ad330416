//! Register semantics, driven the way Linux's virtio_mmio driver drives
//! them, against a test guest memory and the real console device.

use std::io::Write;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

use virtio_devices::console::Console;
use vm_memory::{Bytes, GuestAddress};

use super::*;

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);
impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct CountingLine(AtomicUsize);
impl InterruptLine for CountingLine {
    fn trigger(&self) -> io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(u64, u32)>>);
impl NotifyRegistrar for Recorder {
    fn register(&self, addr: u64, datamatch: u32, _fd: &EventFd) -> io::Result<()> {
        self.0.lock().unwrap().push((addr, datamatch));
        Ok(())
    }
}

const MEM_SIZE: usize = 0x10000;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const BUF: u64 = 0x4000;

struct Fixture {
    t: MmioTransport,
    mem: GuestMemoryMmap,
    sink: Sink,
    line: Arc<CountingLine>,
}

fn fixture() -> Fixture {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let sink = Sink::default();
    let line = Arc::new(CountingLine::default());
    let console = Console::new("test", Box::new(sink.clone()), None);
    let t = MmioTransport::new(Box::new(console), mem.clone(), line.clone()).unwrap();
    Fixture { t, mem, sink, line }
}

fn r32(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn w32(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

/// The driver's side of initialisation up to FEATURES_OK.
fn negotiate(t: &mut MmioTransport) {
    w32(t, reg::STATUS, 0);
    w32(t, reg::STATUS, status::ACKNOWLEDGE);
    w32(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w32(t, reg::DRIVER_FEATURES_SEL, 1);
    w32(t, reg::DRIVER_FEATURES, 1); // VIRTIO_F_VERSION_1
    w32(t, reg::DRIVER_FEATURES_SEL, 0);
    w32(t, reg::DRIVER_FEATURES, 0);
    w32(
        t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
}

fn setup_queue(t: &mut MmioTransport, index: u32, size: u32, desc: u64) {
    w32(t, reg::QUEUE_SEL, index);
    w32(t, reg::QUEUE_NUM, size);
    w32(t, reg::QUEUE_DESC_LOW, desc as u32);
    w32(t, reg::QUEUE_DESC_HIGH, (desc >> 32) as u32);
    w32(t, reg::QUEUE_DRIVER_LOW, (desc + AVAIL - DESC) as u32);
    w32(t, reg::QUEUE_DRIVER_HIGH, 0);
    w32(t, reg::QUEUE_DEVICE_LOW, (desc + USED - DESC) as u32);
    w32(t, reg::QUEUE_DEVICE_HIGH, 0);
    w32(t, reg::QUEUE_READY, 1);
}

const ALL_OK: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

#[test]
fn identity_registers() {
    let mut f = fixture();
    assert_eq!(r32(&mut f.t, reg::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(r32(&mut f.t, reg::VERSION), 2);
    assert_eq!(r32(&mut f.t, reg::DEVICE_ID), 3);
    assert_eq!(r32(&mut f.t, reg::VENDOR_ID), VENDOR_ID);
    // Registers are 32 bits wide: other widths read as zero.
    let mut b = [0xffu8; 2];
    f.t.read(reg::MAGIC_VALUE, &mut b);
    assert_eq!(b, [0, 0]);
    // Unknown offsets read as zero; absent shared memory reads as all ones.
    assert_eq!(r32(&mut f.t, 0x0f0), 0);
    assert_eq!(r32(&mut f.t, reg::SHM_LEN_LOW), u32::MAX);
}

#[test]
fn device_features_by_selector() {
    let mut f = fixture();
    w32(&mut f.t, reg::DEVICE_FEATURES_SEL, 0);
    assert_eq!(r32(&mut f.t, reg::DEVICE_FEATURES), 0);
    w32(&mut f.t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(r32(&mut f.t, reg::DEVICE_FEATURES), 1);
    w32(&mut f.t, reg::DEVICE_FEATURES_SEL, 7);
    assert_eq!(r32(&mut f.t, reg::DEVICE_FEATURES), 0);
}

#[test]
fn features_not_offered_are_refused() {
    let mut f = fixture();
    w32(&mut f.t, reg::STATUS, status::ACKNOWLEDGE);
    w32(&mut f.t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w32(&mut f.t, reg::DRIVER_FEATURES_SEL, 1);
    w32(&mut f.t, reg::DRIVER_FEATURES, 1 | 2); // VERSION_1 + an unoffered bit
    let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    w32(&mut f.t, reg::STATUS, s);
    assert_eq!(r32(&mut f.t, reg::STATUS) & status::FEATURES_OK, 0);
    // A legacy-only driver (no VERSION_1) is refused as well.
    w32(&mut f.t, reg::DRIVER_FEATURES, 0);
    w32(&mut f.t, reg::STATUS, s);
    assert_eq!(r32(&mut f.t, reg::STATUS) & status::FEATURES_OK, 0);
    // DRIVER_OK without FEATURES_OK does not activate.
    w32(
        &mut f.t,
        reg::STATUS,
        s & !status::FEATURES_OK | status::DRIVER_OK,
    );
    assert!(!f.t.activated());
}

#[test]
fn features_freeze_after_features_ok() {
    let mut f = fixture();
    negotiate(&mut f.t);
    assert_ne!(r32(&mut f.t, reg::STATUS) & status::FEATURES_OK, 0);
    w32(&mut f.t, reg::DRIVER_FEATURES_SEL, 1);
    w32(&mut f.t, reg::DRIVER_FEATURES, 0);
    assert_eq!(f.t.driver_features, VIRTIO_F_VERSION_1);
}

#[test]
fn status_bits_cannot_be_cleared_without_reset() {
    let mut f = fixture();
    negotiate(&mut f.t);
    w32(&mut f.t, reg::STATUS, status::ACKNOWLEDGE);
    assert_eq!(
        r32(&mut f.t, reg::STATUS),
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK
    );
}

#[test]
fn transmit_reaches_the_device_and_interrupts() {
    let mut f = fixture();
    negotiate(&mut f.t);
    assert_eq!(r32(&mut f.t, reg::QUEUE_NUM_MAX), 256);
    setup_queue(&mut f.t, 1, 16, DESC);
    assert_eq!(r32(&mut f.t, reg::QUEUE_READY), 1);
    w32(&mut f.t, reg::STATUS, ALL_OK);
    assert!(f.t.activated());
    assert_eq!(r32(&mut f.t, reg::STATUS), ALL_OK);

    // One descriptor with the text, published in the available ring.
    let text = b"hello over virtio-mmio\n";
    f.mem.write_slice(text, GuestAddress(BUF)).unwrap();
    f.mem.write_obj(BUF, GuestAddress(DESC)).unwrap();
    f.mem
        .write_obj(text.len() as u32, GuestAddress(DESC + 8))
        .unwrap();
    f.mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap(); // ring[0] = desc 0
    f.mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap(); // idx = 1
    w32(&mut f.t, reg::QUEUE_NOTIFY, 1);

    assert_eq!(f.sink.0.lock().unwrap().as_slice(), text);
    let used_idx: u16 = f.mem.read_obj(GuestAddress(USED + 2)).unwrap();
    assert_eq!(used_idx, 1);
    assert_eq!(r32(&mut f.t, reg::INTERRUPT_STATUS), INT_VRING);
    assert_eq!(f.line.0.load(Ordering::SeqCst), 1);
    w32(&mut f.t, reg::INTERRUPT_ACK, INT_VRING);
    assert_eq!(r32(&mut f.t, reg::INTERRUPT_STATUS), 0);
}

#[test]
fn notify_before_driver_ok_is_ignored() {
    let mut f = fixture();
    negotiate(&mut f.t);
    setup_queue(&mut f.t, 1, 16, DESC);
    f.mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
    w32(&mut f.t, reg::QUEUE_NOTIFY, 1);
    assert!(f.sink.0.lock().unwrap().is_empty());
    assert_eq!(f.line.0.load(Ordering::SeqCst), 0);
    // Out-of-range queue indexes are ignored too.
    w32(&mut f.t, reg::STATUS, ALL_OK);
    w32(&mut f.t, reg::QUEUE_NOTIFY, 99);
}

#[test]
fn bad_queue_size_prevents_activation() {
    for size in [0, 3, 512, 0x1_0000] {
        let mut f = fixture();
        negotiate(&mut f.t);
        setup_queue(&mut f.t, 1, size, DESC);
        w32(&mut f.t, reg::STATUS, ALL_OK);
        assert!(!f.t.activated(), "size {size}");
        assert_ne!(
            r32(&mut f.t, reg::STATUS) & status::DEVICE_NEEDS_RESET,
            0,
            "size {size}"
        );
    }
}

#[test]
fn rings_outside_memory_prevent_activation() {
    let mut f = fixture();
    negotiate(&mut f.t);
    setup_queue(&mut f.t, 1, 16, MEM_SIZE as u64 - 0x10);
    w32(&mut f.t, reg::STATUS, ALL_OK);
    assert!(!f.t.activated());
    // A reset brings the device back, and a good setup then works.
    negotiate(&mut f.t);
    assert_eq!(r32(&mut f.t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    setup_queue(&mut f.t, 1, 16, DESC);
    w32(&mut f.t, reg::STATUS, ALL_OK);
    assert!(f.t.activated());
}

#[test]
fn a_bad_descriptor_marks_the_device_for_reset() {
    let mut f = fixture();
    negotiate(&mut f.t);
    setup_queue(&mut f.t, 1, 16, DESC);
    w32(&mut f.t, reg::STATUS, ALL_OK);
    // Descriptor pointing past the end of guest memory.
    f.mem
        .write_obj(MEM_SIZE as u64 - 4, GuestAddress(DESC))
        .unwrap();
    f.mem.write_obj(64u32, GuestAddress(DESC + 8)).unwrap();
    f.mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
    f.t.process_queue(1).unwrap();
    assert_ne!(r32(&mut f.t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    assert_ne!(r32(&mut f.t, reg::INTERRUPT_STATUS) & INT_CONFIG, 0);
}

#[test]
fn queue_registers_freeze_once_ready() {
    let mut f = fixture();
    negotiate(&mut f.t);
    setup_queue(&mut f.t, 0, 16, DESC);
    w32(&mut f.t, reg::QUEUE_NUM, 8);
    w32(&mut f.t, reg::QUEUE_DESC_LOW, 0x8000);
    assert_eq!(f.t.queues[0].size(), 16);
    assert_eq!(f.t.queues[0].desc_table(), DESC);
    // Selecting a queue that does not exist reads as absent.
    w32(&mut f.t, reg::QUEUE_SEL, 5);
    assert_eq!(r32(&mut f.t, reg::QUEUE_NUM_MAX), 0);
    w32(&mut f.t, reg::QUEUE_READY, 1);
    assert_eq!(r32(&mut f.t, reg::QUEUE_READY), 0);
}

#[test]
fn reset_clears_everything() {
    let mut f = fixture();
    negotiate(&mut f.t);
    setup_queue(&mut f.t, 1, 16, DESC);
    w32(&mut f.t, reg::STATUS, ALL_OK);
    f.t.config_changed().unwrap();
    assert_eq!(r32(&mut f.t, reg::CONFIG_GENERATION), 1);
    assert_eq!(r32(&mut f.t, reg::INTERRUPT_STATUS), INT_CONFIG);
    w32(&mut f.t, reg::STATUS, 0);
    assert!(!f.t.activated());
    assert_eq!(r32(&mut f.t, reg::STATUS), 0);
    assert_eq!(r32(&mut f.t, reg::INTERRUPT_STATUS), 0);
    w32(&mut f.t, reg::QUEUE_SEL, 1);
    assert_eq!(r32(&mut f.t, reg::QUEUE_READY), 0);
    assert_eq!(f.t.driver_features, 0);
}

#[test]
fn config_space_is_the_devices() {
    let mut f = fixture();
    // The console's 12-byte configuration reads as zeros, past it too, at
    // any width.
    let mut b = [0xffu8; 8];
    f.t.read(reg::CONFIG, &mut b);
    assert_eq!(b, [0; 8]);
    let mut b = [0xffu8; 1];
    f.t.read(reg::CONFIG + 0x200, &mut b);
    assert_eq!(b, [0]);
}

#[test]
fn notifiers_are_registered_per_queue() {
    let f = fixture();
    let rec = Recorder::default();
    f.t.register_notifiers(0xd000_0000, &rec).unwrap();
    assert_eq!(
        *rec.0.lock().unwrap(),
        vec![(0xd000_0050, 0), (0xd000_0050, 1)]
    );
    assert!(f.t.queue_event(1).is_some());
    assert!(f.t.queue_event(2).is_none());
}
