//! The file type identifier: the first 64 KiB of every VHDX file, holding
//! the `vhdxfile` signature and the name of the program that created it.

use alloc::string::String;

use disk_io::{Error, ReadAt, Result};

/// Where the file type identifier is.
pub const OFFSET: u64 = 0;
/// The signature that opens every VHDX file.
pub const SIGNATURE: &[u8; 8] = b"vhdxfile";
/// Bytes of the creator field (UTF-16LE, 256 code units).
const CREATOR_LEN: usize = 512;

/// The file type identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileIdentifier {
    /// The creator string (informational: the program that made the file).
    pub creator: String,
}

impl FileIdentifier {
    /// Reads and checks the file type identifier at the start of `file`.
    pub fn read<D: ReadAt + ?Sized>(file: &D) -> Result<Self> {
        let mut buf = [0u8; 8 + CREATOR_LEN];
        file.read_at(OFFSET, &mut buf)
            .map_err(|e| e.context("vhdx file type identifier"))?;
        if buf.get(..8) != Some(&SIGNATURE[..]) {
            return Err(Error::corrupt(
                "vhdx file type identifier signature (expected 'vhdxfile')",
                OFFSET,
            ));
        }
        let creator = utf16le(buf.get(8..).unwrap_or(&[]));
        Ok(FileIdentifier { creator })
    }
}

/// Decodes UTF-16LE up to the first NUL, replacing what does not decode.
pub(crate) fn utf16le(bytes: &[u8]) -> String {
    let units = bytes
        .chunks_exact(2)
        .map(|c| {
            u16::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        })
        .take_while(|&u| u != 0);
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}
