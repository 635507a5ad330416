//! Streaming copies into allocation pages.
//!
//! A large write into a buffer's mapping is data the CPU will not read
//! back: the GPU takes it at the next submission. An ordinary `memcpy`
//! reads every destination line into the cache before writing it (the
//! copy's size is below glibc's non-temporal threshold on hosts with large
//! caches), so it moves the bytes three times. Non-temporal stores write
//! around the cache, as a real user-mode driver does into write-combined
//! upload memory; on the H100 machine a 64 MiB copy takes 7.6-8.8 ms that
//! way against 12 ms for `memcpy` (docs/guest-tools.md). For an adapter
//! that is the CPU (lavapipe) the opposite holds: it reads the pages back
//! through the cache, so [`crate::Buffer::write_at`] streams only for GPUs.
//!
//! The order of the stores matters too, and differently by vendor. On the
//! H100 machine's Intel Xeon, four streams a page apart, a line of each in
//! turn (as glibc's large `memcpy` does), copied 64 MiB at 10.4-10.8 GB/s
//! against 8.2-9.3 GB/s in one stream; on the development machine's AMD
//! EPYC the same four streams ran at 4.3-4.8 GB/s against 12.5-13.3.
//! Intel CPUs get four streams, others one.

/// Copies below this size go through the cache: the data is likely still
/// there and the fence at the end costs more than it saves.
pub const STREAM_MIN: usize = 256 * 1024;

/// Copies `src` into `dst` (same length), with non-temporal stores where
/// the target has them and the copy is large.
pub fn copy(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "stream::copy of unequal lengths");
    if src.len() < STREAM_MIN {
        dst.copy_from_slice(src);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        x86::copy(dst, src);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        dst.copy_from_slice(src);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_loadu_si256, _mm256_stream_si256, _mm_loadu_si128, _mm_sfence,
        _mm_stream_si128,
    };

    /// Bytes per loop step: one 64-byte line.
    const LINE: usize = 64;

    pub fn copy(dst: &mut [u8], src: &[u8]) {
        // The head up to the first line boundary of `dst`, through the cache.
        let head = dst.as_ptr().align_offset(LINE).min(dst.len());
        dst[..head].copy_from_slice(&src[..head]);
        let lines = (dst.len() - head) / LINE;
        let body = lines * LINE;
        let (d, s) = (&mut dst[head..head + body], &src[head..head + body]);
        if std::is_x86_feature_detected!("avx") {
            if four_streams() {
                // SAFETY: AVX is present (checked above).
                unsafe { pages_avx(d, s) };
            } else {
                // SAFETY: AVX is present (checked above).
                unsafe { lines_avx(d, s) };
            }
        } else {
            lines_sse2(d, s);
        }
        let tail = head + body;
        dst[tail..].copy_from_slice(&src[tail..]);
    }

    /// Whether this CPU streams faster in four streams a page apart: an
    /// Intel one (see the module documentation).
    fn four_streams() -> bool {
        static INTEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *INTEL.get_or_init(|| {
            let id = std::arch::x86_64::__cpuid(0);
            [id.ebx, id.edx, id.ecx]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .eq(*b"GenuineIntel")
        })
    }

    /// Bytes in one of the four streams' turns.
    const PAGE: usize = 4096;

    /// As [`lines_avx`], in groups of four pages: a line of each page in
    /// turn; the lines after the last whole group one after another.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn pages_avx(d: &mut [u8], s: &[u8]) {
        debug_assert!(d.len() == s.len() && d.len().is_multiple_of(LINE));
        debug_assert!((d.as_ptr() as usize).is_multiple_of(LINE));
        let groups = d.len() / (4 * PAGE);
        let (dp, sp) = (d.as_mut_ptr(), s.as_ptr());
        for g in 0..groups {
            for line in (0..PAGE).step_by(LINE) {
                for page in 0..4 {
                    let i = g * 4 * PAGE + page * PAGE + line;
                    // SAFETY: `i + LINE <= groups * 4 * PAGE <= len` for
                    // both slices; loads are unaligned, stores 32-byte
                    // aligned (dp is line-aligned, i a multiple of LINE).
                    unsafe {
                        let a = _mm256_loadu_si256(sp.add(i).cast::<__m256i>());
                        let b = _mm256_loadu_si256(sp.add(i + 32).cast::<__m256i>());
                        _mm256_stream_si256(dp.add(i).cast::<__m256i>(), a);
                        _mm256_stream_si256(dp.add(i + 32).cast::<__m256i>(), b);
                    }
                }
            }
        }
        let done = groups * 4 * PAGE;
        // SAFETY: AVX is present (this function's own requirement); the
        // rest is still line-aligned and whole lines. It ends with SFENCE.
        unsafe { lines_avx(&mut d[done..], &s[done..]) };
    }

    /// `d` starts on a line boundary and is a whole number of lines long,
    /// as is `s` (not aligned).
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn lines_avx(d: &mut [u8], s: &[u8]) {
        debug_assert!(d.len() == s.len() && d.len().is_multiple_of(LINE));
        debug_assert!((d.as_ptr() as usize).is_multiple_of(LINE));
        let (dp, sp) = (d.as_mut_ptr(), s.as_ptr());
        for i in (0..d.len()).step_by(LINE) {
            // SAFETY: `i + LINE <= len` for both slices; loads are
            // unaligned, stores 32-byte aligned (dp is line-aligned).
            unsafe {
                let a = _mm256_loadu_si256(sp.add(i).cast::<__m256i>());
                let b = _mm256_loadu_si256(sp.add(i + 32).cast::<__m256i>());
                _mm256_stream_si256(dp.add(i).cast::<__m256i>(), a);
                _mm256_stream_si256(dp.add(i + 32).cast::<__m256i>(), b);
            }
        }
        // Orders the streaming stores before what follows (the UNLOCK2
        // that hands the pages to the host).
        _mm_sfence();
    }

    /// As [`lines_avx`], with SSE2 (always present on x86_64).
    pub(super) fn lines_sse2(d: &mut [u8], s: &[u8]) {
        debug_assert!(d.len() == s.len() && d.len().is_multiple_of(LINE));
        let (dp, sp) = (d.as_mut_ptr(), s.as_ptr());
        for i in (0..d.len()).step_by(16) {
            // SAFETY: `i + 16 <= len` for both slices; the store is
            // 16-byte aligned (dp is line-aligned, i a multiple of 16).
            unsafe {
                let a = _mm_loadu_si128(sp.add(i).cast::<__m128i>());
                _mm_stream_si128(dp.add(i).cast::<__m128i>(), a);
            }
        }
        // SAFETY: as in lines_avx.
        unsafe { _mm_sfence() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_byte_at_any_alignment() {
        let src: Vec<u8> = (0..STREAM_MIN + 300).map(|i| (i * 7 % 251) as u8).collect();
        let mut buf = vec![0u8; STREAM_MIN + 400];
        for (d_off, s_off, len) in [
            (0, 0, STREAM_MIN),
            (1, 3, STREAM_MIN + 100),
            (63, 0, STREAM_MIN + 17),
            (5, 64, STREAM_MIN),
            (0, 0, 100),
        ] {
            buf.fill(0xee);
            copy(&mut buf[d_off..d_off + len], &src[s_off..s_off + len]);
            assert_eq!(&buf[d_off..d_off + len], &src[s_off..s_off + len]);
            assert!(buf[..d_off].iter().all(|&b| b == 0xee));
            assert!(buf[d_off + len..].iter().all(|&b| b == 0xee));
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn both_instruction_sets_copy_every_line() {
        let src: Vec<u8> = (0..4096 + 65).map(|i| (i % 253) as u8).collect();
        let mut a = vec![0u8; 4096 + 128];
        let off = a.as_ptr().align_offset(64);
        x86::lines_sse2(&mut a[off..off + 4096], &src[65..]);
        assert_eq!(&a[off..off + 4096], &src[65..]);
        if std::is_x86_feature_detected!("avx") {
            a.fill(0);
            // SAFETY: AVX is present.
            unsafe { x86::lines_avx(&mut a[off..off + 4096], &src[65..]) };
            assert_eq!(&a[off..off + 4096], &src[65..]);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn four_streams_copy_every_line() {
        if !std::is_x86_feature_detected!("avx") {
            return;
        }
        // Two groups of four pages and some lines after them.
        let len = 8 * 4096 + 5 * 64;
        let src: Vec<u8> = (0..len + 3).map(|i| (i * 13 % 251) as u8).collect();
        let mut a = vec![0u8; len + 64];
        let off = a.as_ptr().align_offset(64);
        // SAFETY: AVX is present.
        unsafe { x86::pages_avx(&mut a[off..off + len], &src[3..]) };
        assert_eq!(&a[off..off + len], &src[3..]);
    }
}
