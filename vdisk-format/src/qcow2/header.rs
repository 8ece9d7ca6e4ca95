//! The qcow2 header and its extensions (qemu's docs/interop/qcow2.txt).
//! All fields are big-endian.

use alloc::format;
use alloc::string::String;

use disk_io::bytes::{be_u32, be_u64};
use disk_io::{Error, ReadAt, Result};

/// `QFI\xfb`.
pub const MAGIC: u32 = 0x5146_49fb;
/// Smallest and largest cluster sizes (512 B and 2 MiB).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// See [`MIN_CLUSTER_BITS`].
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Largest L1 table qemu accepts, in bytes.
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Longest backing file name the specification allows.
pub const MAX_BACKING_NAME: u32 = 1023;

/// Header extension naming the external data file ("DATA").
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Incompatible feature bits.
pub mod incompatible {
    /// Refcounts may be inconsistent (lazy refcounts, unclean shutdown).
    pub const DIRTY: u64 = 1 << 0;
    /// qemu found corruption and marked the image.
    pub const CORRUPT: u64 = 1 << 1;
    /// Guest data lives in an external data file.
    pub const EXTERNAL_DATA_FILE: u64 = 1 << 2;
    /// The compression type byte is valid.
    pub const COMPRESSION_TYPE: u64 = 1 << 3;
    /// L2 entries are 128 bits with subcluster bitmaps.
    pub const EXTENDED_L2: u64 = 1 << 4;
    /// Every bit this reader understands.
    pub const KNOWN: u64 = DIRTY | CORRUPT | EXTERNAL_DATA_FILE | COMPRESSION_TYPE | EXTENDED_L2;
}

/// How compressed clusters are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (no zlib wrapper), qemu's default.
    Zlib,
    /// Zstandard frames.
    Zstd,
}

/// The header fields this reader uses, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Guest size in bytes.
    pub size: u64,
    /// Number of L1 entries.
    pub l1_size: u32,
    /// File offset of the L1 table.
    pub l1_table_offset: u64,
    /// File offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u32,
    /// Internal snapshots.
    pub nb_snapshots: u32,
    /// Incompatible feature bits.
    pub incompatible_features: u64,
    /// Compatible feature bits.
    pub compatible_features: u64,
    /// Auto-clear feature bits.
    pub autoclear_features: u64,
    /// log2 of the refcount width in bits.
    pub refcount_order: u32,
    /// Bytes of header before the extensions.
    pub header_length: u32,
    /// Compression of compressed clusters.
    pub compression: Compression,
    /// Backing file name, when the image has one.
    pub backing_file: Option<String>,
    /// Backing file format from the header extension, when given.
    pub backing_format: Option<String>,
    /// External data file name (header extension `0x44415441`), when the
    /// image keeps its guest data in another file.
    pub data_file: Option<String>,
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// True when L2 entries carry subcluster bitmaps.
    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & incompatible::EXTENDED_L2 != 0
    }

    /// Bytes per L2 entry (8, or 16 with extended L2).
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2() { 16 } else { 8 }
    }

    /// Entries per L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size()
    }

    /// Reads and checks the header of `file`.
    pub fn read<D: ReadAt + ?Sized>(file: &D) -> Result<Header> {
        let file_size = file.size();
        let head = disk_io::read_vec(file, 0, file_size.min(4096) as usize)?;
        let field32 = |at: usize, name: &str| {
            be_u32(&head, at).ok_or_else(|| {
                Error::corrupt(format!("qcow2 header truncated before {name}"), at as u64)
            })
        };
        let field64 = |at: usize, name: &str| {
            be_u64(&head, at).ok_or_else(|| {
                Error::corrupt(format!("qcow2 header truncated before {name}"), at as u64)
            })
        };
        if field32(0, "magic")? != MAGIC {
            return Err(Error::corrupt("qcow2 header: bad magic", 0));
        }
        let version = field32(4, "version")?;
        if version != 2 && version != 3 {
            return Err(Error::unsupported(format!("qcow2 header version {version}")).at(4));
        }
        let cluster_bits = field32(20, "cluster_bits")?;
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Error::corrupt(
                format!(
                    "qcow2 header: cluster_bits {cluster_bits} outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
                ),
                20,
            ));
        }
        let crypt_method = field32(32, "crypt_method")?;
        if crypt_method != 0 {
            let how = if crypt_method == 1 { "AES" } else { "LUKS" };
            return Err(Error::unsupported(format!(
                "encrypted qcow2 image ({how}, crypt_method {crypt_method})"
            ))
            .at(32));
        }
        let (
            incompatible_features,
            compatible_features,
            autoclear_features,
            refcount_order,
            header_length,
        ) = if version == 3 {
            (
                field64(72, "incompatible_features")?,
                field64(80, "compatible_features")?,
                field64(88, "autoclear_features")?,
                field32(96, "refcount_order")?,
                field32(100, "header_length")?,
            )
        } else {
            (0, 0, 0, 4, 72)
        };
        let unknown = incompatible_features & !incompatible::KNOWN;
        if unknown != 0 {
            return Err(Error::unsupported(format!(
                "qcow2 incompatible feature bits {unknown:#x}"
            ))
            .at(72));
        }
        if refcount_order > 6 {
            return Err(Error::corrupt(
                format!("qcow2 header: refcount_order {refcount_order} > 6"),
                96,
            ));
        }
        let cluster_size = 1u64 << cluster_bits;
        if version == 3
            && (header_length < 104
                || u64::from(header_length) > cluster_size
                || !header_length.is_multiple_of(8))
        {
            return Err(Error::corrupt(
                format!("qcow2 header: header_length {header_length}"),
                100,
            ));
        }
        let compression = if incompatible_features & incompatible::COMPRESSION_TYPE != 0 {
            match head.get(104).copied() {
                Some(0) if header_length > 104 => Compression::Zlib,
                Some(1) if header_length > 104 => Compression::Zstd,
                other => {
                    return Err(
                        Error::unsupported(format!("qcow2 compression type {other:?}")).at(104),
                    );
                }
            }
        } else {
            Compression::Zlib
        };
        let size = field64(24, "size")?;
        let l1_size = field32(36, "l1_size")?;
        let l1_table_offset = field64(40, "l1_table_offset")?;
        let header = Header {
            version,
            cluster_bits,
            size,
            l1_size,
            l1_table_offset,
            refcount_table_offset: field64(48, "refcount_table_offset")?,
            refcount_table_clusters: field32(56, "refcount_table_clusters")?,
            nb_snapshots: field32(60, "nb_snapshots")?,
            incompatible_features,
            compatible_features,
            autoclear_features,
            refcount_order,
            header_length,
            compression,
            backing_file: None,
            backing_format: None,
            data_file: None,
        };
        // The L1 table must cover the guest and fit in the file.
        let covered_per_l1 = header.l2_entries() * cluster_size;
        let needed = size.div_ceil(covered_per_l1);
        if u64::from(l1_size) < needed {
            return Err(Error::corrupt(
                format!(
                    "qcow2 header: l1_size {l1_size} cannot map a {size}-byte disk ({needed} entries needed)"
                ),
                36,
            ));
        }
        let l1_bytes = u64::from(l1_size) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(Error::corrupt(
                format!("qcow2 header: L1 table of {l1_bytes} bytes exceeds 32 MiB"),
                36,
            ));
        }
        if !l1_table_offset.is_multiple_of(cluster_size)
            || l1_table_offset
                .checked_add(l1_bytes)
                .is_none_or(|end| end > file_size)
        {
            return Err(Error::corrupt(
                format!(
                    "qcow2 L1 table at {l1_table_offset:#x} ({l1_bytes} bytes) is unaligned or past the end of the file"
                ),
                40,
            ));
        }
        let mut header = header;
        header.read_backing(file, &head)?;
        if header.has_data_file() && header.data_file.is_none() {
            return Err(Error::corrupt(
                "qcow2 header: external data file bit set, but no data file name extension",
                72,
            ));
        }
        Ok(header)
    }

    /// True when guest data lives in an external data file.
    pub fn has_data_file(&self) -> bool {
        self.incompatible_features & incompatible::EXTERNAL_DATA_FILE != 0
    }

    /// True when the external data file is a raw image of the guest
    /// (autoclear bit 1): guest offset and data-file offset are equal.
    pub fn raw_data_file(&self) -> bool {
        self.has_data_file() && self.autoclear_features & 2 != 0
    }

    /// Reads the backing file name and the header extensions.
    fn read_backing<D: ReadAt + ?Sized>(&mut self, file: &D, head: &[u8]) -> Result<()> {
        let offset = be_u64(head, 8).unwrap_or(0);
        let len = be_u32(head, 16).unwrap_or(0);
        if offset != 0 {
            if len == 0 || len > MAX_BACKING_NAME {
                return Err(Error::corrupt(
                    format!("qcow2 backing file name length {len}"),
                    16,
                ));
            }
            let name = disk_io::read_vec(file, offset, len as usize)
                .map_err(|e| e.context("qcow2 backing file name"))?;
            self.backing_file = Some(String::from_utf8_lossy(&name).into_owned());
        }
        // Extensions: type, length, data padded to 8 bytes, until type 0.
        let mut at = self.header_length as usize;
        for _ in 0..64 {
            let (Some(kind), Some(ext_len)) = (be_u32(head, at), be_u32(head, at + 4)) else {
                break;
            };
            if kind == 0 {
                break;
            }
            let data = head.get(at + 8..at + 8 + ext_len as usize);
            if kind == 0xe279_2aca {
                if let Some(d) = data {
                    self.backing_format = Some(String::from_utf8_lossy(d).into_owned());
                }
            }
            if kind == EXT_DATA_FILE {
                if let Some(d) = data {
                    self.data_file = Some(String::from_utf8_lossy(d).into_owned());
                }
            }
            at += 8 + (ext_len as usize).div_ceil(8) * 8;
        }
        Ok(())
    }
}
