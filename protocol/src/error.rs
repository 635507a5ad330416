//! The decoder's error type and the bounds-checked reader every decoder in
//! this crate uses on untrusted bytes.

use zerocopy::{FromBytes, Immutable, KnownLayout};

use crate::ntstatus::NtStatus;

/// Why bytes from the other side could not be decoded. Every variant maps to
/// the NTSTATUS the device answers with ([`DecodeError::status`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what}: need {need} bytes, {have} left")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{what}: {extra} bytes past the end of the message")]
    TrailingBytes { what: &'static str, extra: usize },
    #[error("bad magic 0x{found:08x} in {what}")]
    BadMagic { what: &'static str, found: u32 },
    #[error("{what}: version {found} is not supported (this side speaks {supported})")]
    UnsupportedVersion {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("{what} of {len} bytes is over the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("unknown channel type {0}")]
    UnknownChannel(u32),
    #[error("unknown command {command} on channel {channel}")]
    UnknownCommand { channel: u32, command: u32 },
    #[error("command {command} on channel {channel} is not implemented")]
    Unsupported { channel: u32, command: u32 },
    #[error("{what}: {count} is over the limit of {max}")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        max: u64,
    },
    #[error("{what}: invalid value {value:#x}")]
    InvalidValue { what: &'static str, value: u64 },
    #[error("{0}: arithmetic overflow")]
    Overflow(&'static str),
}

impl DecodeError {
    /// The NTSTATUS a device replies with when a request fails to decode.
    pub fn status(&self) -> NtStatus {
        match self {
            DecodeError::Unsupported { .. } | DecodeError::UnsupportedVersion { .. } => {
                NtStatus::NOT_SUPPORTED
            }
            DecodeError::UnknownCommand { .. } => NtStatus::NOT_IMPLEMENTED,
            _ => NtStatus::INVALID_PARAMETER,
        }
    }
}

/// A cursor over untrusted bytes. Every read checks the remaining length
/// first; nothing is ever indexed unchecked, and no allocation is sized from
/// a count before the bytes for it are known to be there.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn truncated(&self, need: usize) -> DecodeError {
        DecodeError::Truncated {
            what: self.what,
            need,
            have: self.buf.len(),
        }
    }

    /// Copies a `T` out of the front (no alignment needed: untrusted buffers
    /// come at any offset).
    pub(crate) fn read<T: FromBytes + KnownLayout + Immutable>(
        &mut self,
    ) -> Result<T, DecodeError> {
        let need = core::mem::size_of::<T>();
        let (value, rest) = T::read_from_prefix(self.buf).map_err(|_| self.truncated(need))?;
        self.buf = rest;
        Ok(value)
    }

    /// Borrows the next `len` bytes.
    pub(crate) fn bytes(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.buf.len() {
            return Err(self.truncated(len));
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    /// Reads `count` values of `T`, after checking that they are all there.
    pub(crate) fn array<T: FromBytes + KnownLayout + Immutable>(
        &mut self,
        count: usize,
    ) -> Result<Vec<T>, DecodeError> {
        let need = count
            .checked_mul(core::mem::size_of::<T>())
            .ok_or(DecodeError::Overflow(self.what))?;
        let mut bytes = Reader::new(self.bytes(need)?, self.what);
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(bytes.read()?);
        }
        Ok(out)
    }

    /// The bytes left, without consuming them.
    pub(crate) fn peek(&self) -> &'a [u8] {
        self.buf
    }

    /// Fails when bytes are left over: a message is exactly its fixed part
    /// and its tails, so extra bytes mean the sizes in it are wrong.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                what: self.what,
                extra: self.buf.len(),
            })
        }
    }
}

/// Fails with [`DecodeError::CountTooLarge`] when `count > max`.
pub(crate) fn check_count(what: &'static str, count: u32, max: u32) -> Result<usize, DecodeError> {
    if count > max {
        return Err(DecodeError::CountTooLarge {
            what,
            count: count.into(),
            max: max.into(),
        });
    }
    Ok(count as usize)
}
