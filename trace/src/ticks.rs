//! The recorder's accounting clock. The device thread adds up its time in
//! the recorder on every frame; reading the system clock for that doubled
//! the clock reads a frame costs (each record's time needs one), and where
//! a VM's clock source has no vDSO path each read is a system call. The
//! CPU's time-stamp counter is read in a few cycles; its rate is measured
//! against the system clock over the whole recording.

use std::time::{Duration, Instant};

/// Now, in ticks: the time-stamp counter on x86-64, nanoseconds since an
/// arbitrary start elsewhere.
pub fn now() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC reads a counter; it has no memory effects and
        // every x86-64 CPU has it.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Converts ticks to time at the rate seen since [`Rate::start`].
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    tick: u64,
    at: Instant,
}

impl Rate {
    pub fn start() -> Rate {
        Rate {
            tick: now(),
            at: Instant::now(),
        }
    }

    /// `ticks` as time: at least a second since the start makes the rate
    /// good to a part in a million or so; before any tick passed, zero.
    pub fn duration(&self, ticks: u64) -> Duration {
        let (spent, elapsed) = (now().wrapping_sub(self.tick), self.at.elapsed());
        if spent == 0 {
            return Duration::ZERO;
        }
        let nanos = u128::from(ticks) * elapsed.as_nanos() / u128::from(spent);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_convert_to_about_the_time_they_took() {
        let rate = Rate::start();
        let (t0, i0) = (now(), Instant::now());
        std::thread::sleep(Duration::from_millis(30));
        let (took, real) = (now() - t0, i0.elapsed());
        let d = rate.duration(took).as_secs_f64();
        // Loose: what is checked is the conversion, not the machine.
        assert!(
            d > real.as_secs_f64() * 0.5 && d < real.as_secs_f64() * 1.5,
            "{d} vs {real:?}"
        );
    }
}
