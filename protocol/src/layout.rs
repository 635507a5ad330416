//! Helpers that every layout module uses: the struct macro that writes the
//! byte offsets beside the fields and checks them at compile time, the flag
//! newtype macro, and serde helpers for arrays longer than serde's own impls.

/// Defines a `#[repr(C)]` wire or ABI struct whose fields carry their byte
/// offset (`name: Type => offset`) and whose total size is given in brackets.
///
/// The offsets are written by hand from the C layout so that a reader can
/// check the table in docs/protocol.md against the code, and the compiler
/// checks both against what Rust actually lays out. Padding that C inserts
/// implicitly is an explicit `_padN` field here: zerocopy's `IntoBytes` refuses
/// implicit padding (it would leak uninitialised bytes to the guest).
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident [$size:expr] {
            $(
                $(#[$fmeta:meta])*
                pub $field:ident : $ty:ty => $off:expr
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq,
            zerocopy::FromBytes, zerocopy::IntoBytes,
            zerocopy::KnownLayout, zerocopy::Immutable,
            serde::Serialize, serde::Deserialize,
        )]
        pub struct $name {
            $(
                $(#[$fmeta])*
                pub $field: $ty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                <Self as zerocopy::FromZeros>::new_zeroed()
            }
        }

        impl $name {
            /// Size of the struct on the wire, in bytes.
            pub const SIZE: usize = $size;
        }

        const _: () = {
            assert!(core::mem::size_of::<$name>() == $size);
            $( assert!(core::mem::offset_of!($name, $field) == $off); )*
        };
    };
}

/// Defines a transparent `u32`/`u64` flag word (the C side is a union of a
/// bitfield struct and `value`) with named bit constants.
macro_rules! flags_word {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($int:ty) {
            $( $(#[$fmeta:meta])* const $flag:ident = $bit:expr; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, Hash,
            zerocopy::FromBytes, zerocopy::IntoBytes,
            zerocopy::KnownLayout, zerocopy::Immutable,
            serde::Serialize, serde::Deserialize,
        )]
        #[repr(transparent)]
        #[serde(transparent)]
        pub struct $name(pub $int);

        #[allow(dead_code)]
        impl $name {
            $( $(#[$fmeta])* pub const $flag: $name = $name(1 << $bit); )*

            /// True when every bit of `other` is set in `self`.
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }

            /// `self` with the bits of `other` added.
            pub const fn with(self, other: $name) -> $name {
                $name(self.0 | other.0)
            }
        }
    };
}

pub(crate) use {flags_word, wire_struct};

/// serde for fixed arrays longer than 32 elements (serde's built-in impls
/// stop at 32): written as a sequence, read back with a length check.
pub mod big_array {
    use serde::de::{Deserialize, Deserializer, Error};
    use serde::ser::{Serialize, Serializer};

    /// Serialises `[T; N]` as a sequence.
    pub fn serialize<S, T, const N: usize>(value: &[T; N], s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        T: Serialize,
    {
        value.as_slice().serialize(s)
    }

    /// Reads a sequence of exactly `N` elements into `[T; N]`.
    pub fn deserialize<'de, D, T, const N: usize>(d: D) -> Result<[T; N], D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        let items = Vec::<T>::deserialize(d)?;
        let len = items.len();
        items
            .try_into()
            .map_err(|_| D::Error::invalid_length(len, &"an array of the declared length"))
    }
}
