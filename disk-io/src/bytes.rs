//! Bounds-checked reads of fixed-width integers from byte slices, for
//! probes and small parsers that look at a field or two. Each answers
//! `None` when the field does not fit in the slice, never panics.
//!
//! ```
//! use disk_io::bytes::{be_u32, le_u16};
//! let b = [0x53, 0xef, 0, 0, 0, 3];
//! assert_eq!(le_u16(&b, 0), Some(0xef53));
//! assert_eq!(be_u32(&b, 2), Some(3));
//! assert_eq!(be_u32(&b, 3), None);
//! ```

macro_rules! readers {
    ($($(#[$doc:meta])* $name:ident: $ty:ty = $conv:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(bytes: &[u8], at: usize) -> Option<$ty> {
            let end = at.checked_add(core::mem::size_of::<$ty>())?;
            Some(<$ty>::$conv(bytes.get(at..end)?.try_into().ok()?))
        }
    )*};
}

readers! {
    /// Little-endian `u16` at `at`.
    le_u16: u16 = from_le_bytes;
    /// Little-endian `u32` at `at`.
    le_u32: u32 = from_le_bytes;
    /// Little-endian `u64` at `at`.
    le_u64: u64 = from_le_bytes;
    /// Big-endian `u16` at `at`.
    be_u16: u16 = from_be_bytes;
    /// Big-endian `u32` at `at`.
    be_u32: u32 = from_be_bytes;
    /// Big-endian `u64` at `at`.
    be_u64: u64 = from_be_bytes;
}
