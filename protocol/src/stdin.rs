//! The framing of a guest command's standard input on its console (hvc0)
//! when the host's stdin is a file or a pipe.
//!
//! A console has no end of file: a terminal in raw mode passes every byte
//! and never reports EOF, so a guest command that reads its input to the
//! end (`cat`, `sort`, a test reading fixtures) would wait forever. dxvmm
//! therefore sends such input framed: every byte as itself, except
//! [`ESCAPE`], which is sent twice, and the end of the input as [`ESCAPE`]
//! followed by [`END`]. In the guest, `dxvmm-stdin` (guest-tools) decodes
//! the console into a pipe that the command reads and closes the pipe at
//! the end mark. The kernel command-line word `dxvmm.stdin=pipe` tells the
//! guest's `/init` that the input is framed.

/// The escape byte (rare in text, so text costs nothing extra).
pub const ESCAPE: u8 = 0xff;
/// After [`ESCAPE`]: the input has ended.
pub const END: u8 = 0x00;

/// Appends `data`, framed, to `out`.
pub fn encode(data: &[u8], out: &mut Vec<u8>) {
    for &b in data {
        out.push(b);
        if b == ESCAPE {
            out.push(ESCAPE);
        }
    }
}

/// The end mark.
pub const END_MARK: [u8; 2] = [ESCAPE, END];

/// What a framed stream held, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// More input may follow.
    More,
    /// The end mark was seen; bytes after it are ignored.
    End,
}

/// Decodes a framed stream that arrives in pieces of any size.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The last piece ended with a lone [`ESCAPE`].
    escaped: bool,
    ended: bool,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Appends the data bytes of `piece` to `out`. An [`ESCAPE`] followed
    /// by anything but [`ESCAPE`] or [`END`] is not something dxvmm sends;
    /// it is passed through as the two bytes, so nothing is lost.
    pub fn feed(&mut self, piece: &[u8], out: &mut Vec<u8>) -> Decoded {
        if self.ended {
            return Decoded::End;
        }
        for &b in piece {
            if self.escaped {
                self.escaped = false;
                match b {
                    ESCAPE => out.push(ESCAPE),
                    END => {
                        self.ended = true;
                        return Decoded::End;
                    }
                    other => out.extend_from_slice(&[ESCAPE, other]),
                }
            } else if b == ESCAPE {
                self.escaped = true;
            } else {
                out.push(b);
            }
        }
        Decoded::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(data, &mut out);
        out.extend_from_slice(&END_MARK);
        out
    }

    #[test]
    fn every_byte_survives_in_any_split() {
        let data: Vec<u8> = (0..=255u8).chain([0xff, 0xff, 0, 0xff]).collect();
        let wire = framed(&data);
        for piece in [1, 2, 3, 7, wire.len()] {
            let mut d = Decoder::new();
            let mut out = Vec::new();
            let mut ended = false;
            for chunk in wire.chunks(piece) {
                if d.feed(chunk, &mut out) == Decoded::End {
                    ended = true;
                }
            }
            assert!(ended, "piece {piece}");
            assert_eq!(out, data, "piece {piece}");
        }
    }

    #[test]
    fn text_is_unchanged_and_the_end_stops_decoding() {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        assert_eq!(d.feed(b"hello\n", &mut out), Decoded::More);
        assert_eq!(d.feed(&[ESCAPE, END, b'x'], &mut out), Decoded::End);
        assert_eq!(d.feed(b"late", &mut out), Decoded::End);
        assert_eq!(out, b"hello\n");
    }

    #[test]
    fn an_unknown_escape_keeps_both_bytes() {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.feed(&[b'a', ESCAPE, b'b'], &mut out);
        assert_eq!(out, [b'a', ESCAPE, b'b']);
    }

    #[test]
    fn empty_input_is_just_the_end() {
        assert_eq!(framed(b""), END_MARK);
    }
}
