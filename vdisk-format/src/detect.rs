//! Format detection from content, never from file names.

use disk_io::bytes::{be_u32, le_u32};
use disk_io::{Error, ErrorKind, ReadAt, Result, is_zero};

use crate::Format;

/// What the first bytes (and, for VHD, the last sector) of a file say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Detected {
    /// No container header: the file is the guest disk itself.
    Raw(RawContent),
    /// qcow (`QFI\xfb`) with its header version: 2 and 3 are qcow2, 1 is the
    /// legacy qcow format.
    Qcow {
        /// Header version field.
        version: u32,
    },
    /// VMDK hosted sparse extent (`KDMV`), optionally with an embedded descriptor.
    VmdkSparse,
    /// VMDK ESX sparse extent (`COWD`).
    VmdkCowd,
    /// VMDK text descriptor (`# Disk DescriptorFile`) naming extent files.
    VmdkDescriptor,
    /// VHD (`conectix` footer). `fixed` when the only footer is the last
    /// sector (fixed disks); dynamic and differencing disks also carry a
    /// copy at offset 0.
    Vhd {
        /// True when the footer was found only at the end of the file.
        fixed: bool,
    },
    /// VHDX (`vhdxfile` file type identifier).
    Vhdx,
    /// VirtualBox VDI (image signature `0xbeda107f` at offset 0x40).
    Vdi,
}

impl Detected {
    /// The format name as qemu-img spells it.
    pub fn format(&self) -> Format {
        match self {
            Detected::Raw(_) => Format::Raw,
            Detected::Qcow { .. } => Format::Qcow2,
            Detected::VmdkSparse | Detected::VmdkCowd | Detected::VmdkDescriptor => Format::Vmdk,
            Detected::Vhd { .. } => Format::Vhd,
            Detected::Vhdx => Format::Vhdx,
            Detected::Vdi => Format::Vdi,
        }
    }
}

/// What a raw disk (or the guest view of any image) starts with, as far as
/// the partition-table signatures tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawContent {
    /// A GPT header (`EFI PART`) in LBA 1 for this logical sector size.
    Gpt {
        /// 512 or 4096.
        sector_size: u32,
    },
    /// An MBR: boot signature `55 aa` and four well-formed partition entries
    /// (boot indicator 0x00 or 0x80), and not a file-system boot sector.
    Mbr,
    /// The first 64 KiB (or the whole disk, if smaller) are zeros.
    Blank,
    /// Something else: a file system without a table, or unrecognised bytes.
    Other,
}

/// How many bytes at the start detection looks at.
pub const PROBE_LEN: usize = 64 * 1024;

const QCOW_MAGIC: &[u8; 4] = b"QFI\xfb";
const VMDK_SPARSE_MAGIC: &[u8; 4] = b"KDMV";
const VMDK_COWD_MAGIC: &[u8; 4] = b"COWD";
const VHDX_MAGIC: &[u8; 8] = b"vhdxfile";
const VHD_COOKIE: &[u8; 8] = b"conectix";
const VDI_SIGNATURE: u32 = 0xbeda_107f;
const VDI_SIGNATURE_OFFSET: usize = 0x40;
const VMDK_DESCRIPTOR_HEADER: &str = "# Disk DescriptorFile";

/// Identifies the container format of `file` from its content.
///
/// An empty file is an error (it is no disk at all); anything without a
/// container header is [`Detected::Raw`].
///
/// ```
/// use vdisk_format::{detect, Detected, RawContent};
/// let mut disk = vec![0u8; 1 << 20];
/// assert_eq!(detect(&disk[..]).unwrap(), Detected::Raw(RawContent::Blank));
/// disk[..4].copy_from_slice(b"QFI\xfb");
/// disk[4..8].copy_from_slice(&3u32.to_be_bytes());
/// assert_eq!(detect(&disk[..]).unwrap(), Detected::Qcow { version: 3 });
/// assert!(detect(&[][..]).is_err());
/// ```
pub fn detect<D: ReadAt + ?Sized>(file: &D) -> Result<Detected> {
    let size = file.size();
    if size == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "empty file (0 bytes) is not a disk image",
        )
        .at(0));
    }
    let head = read_head(file)?;
    let magic4 = head.get(..4);
    let magic8 = head.get(..8);
    if magic4 == Some(QCOW_MAGIC) {
        let version = be_u32(&head, 4)
            .ok_or_else(|| Error::corrupt("qcow header: truncated before version field", 4))?;
        return Ok(Detected::Qcow { version });
    }
    if magic4 == Some(VMDK_SPARSE_MAGIC) {
        return Ok(Detected::VmdkSparse);
    }
    if magic4 == Some(VMDK_COWD_MAGIC) {
        return Ok(Detected::VmdkCowd);
    }
    if magic8 == Some(VHDX_MAGIC) {
        return Ok(Detected::Vhdx);
    }
    if magic8 == Some(VHD_COOKIE) {
        return Ok(Detected::Vhd { fixed: false });
    }
    if le_u32(&head, VDI_SIGNATURE_OFFSET) == Some(VDI_SIGNATURE) {
        return Ok(Detected::Vdi);
    }
    if is_vmdk_descriptor(&head) {
        return Ok(Detected::VmdkDescriptor);
    }
    if size >= 512 {
        let mut footer = [0u8; 8];
        file.read_at(size - 512, &mut footer)?;
        if &footer == VHD_COOKIE {
            return Ok(Detected::Vhd { fixed: true });
        }
    }
    probe_raw_content(file)
}

/// Classifies the start of a guest disk: GPT, MBR, blank or other.
pub fn probe_raw_content<D: ReadAt + ?Sized>(disk: &D) -> Result<Detected> {
    let head = read_head(disk)?;
    Ok(Detected::Raw(classify(&head)))
}

fn classify(head: &[u8]) -> RawContent {
    for sector_size in [512u32, 4096] {
        let at = sector_size as usize;
        if head.get(at..at + 8) == Some(b"EFI PART") {
            return RawContent::Gpt { sector_size };
        }
    }
    if is_mbr(head) {
        return RawContent::Mbr;
    }
    if is_zero(head) {
        return RawContent::Blank;
    }
    RawContent::Other
}

/// An MBR has the boot signature and four entries whose boot indicators are
/// 0x00 or 0x80; a volume boot record (FAT, NTFS, exFAT) also has the
/// signature but names its file system, and is not an MBR.
fn is_mbr(head: &[u8]) -> bool {
    if head.get(510..512) != Some(&[0x55, 0xaa]) {
        return false;
    }
    let entries_ok = (0..4).all(|i| matches!(head.get(446 + 16 * i), Some(0x00 | 0x80)));
    let oem = head.get(3..11);
    let names_fs = oem == Some(b"NTFS    ")
        || oem == Some(b"EXFAT   ")
        || head.get(0x36..0x39) == Some(b"FAT")
        || head.get(0x52..0x57) == Some(b"FAT32");
    entries_ok && !names_fs
}

fn is_vmdk_descriptor(head: &[u8]) -> bool {
    // The descriptor is text; its first non-blank line is the header comment.
    let text = head.get(..head.len().min(1024)).unwrap_or(&[]);
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let line = text.get(start..).unwrap_or(&[]);
    let line = line
        .get(..line.iter().position(|&b| b == b'\n').unwrap_or(line.len()))
        .unwrap_or(&[]);
    core::str::from_utf8(line)
        .map(|l| l.trim_end().eq_ignore_ascii_case(VMDK_DESCRIPTOR_HEADER))
        .unwrap_or(false)
}

fn read_head<D: ReadAt + ?Sized>(disk: &D) -> Result<alloc::vec::Vec<u8>> {
    let len = disk.size().min(PROBE_LEN as u64) as usize;
    disk_io::read_vec(disk, 0, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; 1 << 20];
        d[at..at + bytes.len()].copy_from_slice(bytes);
        d
    }

    #[test]
    fn magics() {
        assert_eq!(detect(&with(0, b"KDMV")[..]).unwrap(), Detected::VmdkSparse);
        assert_eq!(detect(&with(0, b"COWD")[..]).unwrap(), Detected::VmdkCowd);
        assert_eq!(detect(&with(0, b"vhdxfile")[..]).unwrap(), Detected::Vhdx);
        assert_eq!(
            detect(&with(0, b"conectix")[..]).unwrap(),
            Detected::Vhd { fixed: false }
        );
        assert_eq!(
            detect(&with((1 << 20) - 512, b"conectix")[..]).unwrap(),
            Detected::Vhd { fixed: true }
        );
        assert_eq!(
            detect(&with(0x40, &[0x7f, 0x10, 0xda, 0xbe])[..]).unwrap(),
            Detected::Vdi
        );
        let desc = b"\n# Disk DescriptorFile\nversion=1\n";
        assert_eq!(
            detect(&with(0, desc)[..]).unwrap(),
            Detected::VmdkDescriptor
        );
        assert!(detect(&b"QFI\xfb\0"[..]).is_err(), "truncated qcow header");
    }

    #[test]
    fn raw_content() {
        let raw = |d: Vec<u8>| match detect(&d[..]).unwrap() {
            Detected::Raw(c) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            raw(with(512, b"EFI PART")),
            RawContent::Gpt { sector_size: 512 }
        );
        assert_eq!(
            raw(with(4096, b"EFI PART")),
            RawContent::Gpt { sector_size: 4096 }
        );
        let mut mbr = with(510, &[0x55, 0xaa]);
        mbr[446] = 0x80;
        mbr[450] = 0x83;
        assert_eq!(raw(mbr.clone()), RawContent::Mbr);
        mbr[462] = 0x12; // not a boot indicator: not an MBR
        assert_eq!(raw(mbr), RawContent::Other);
        let mut vbr = with(510, &[0x55, 0xaa]);
        vbr[3..11].copy_from_slice(b"NTFS    ");
        assert_eq!(raw(vbr), RawContent::Other);
        assert_eq!(raw(vec![0u8; 100]), RawContent::Blank);
        assert_eq!(raw(vec![0u8; 100 << 10]), RawContent::Blank);
    }
}
