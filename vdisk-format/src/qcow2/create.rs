//! Creation parameters of a new qcow2 image and its header bytes, laid out
//! as qemu lays them out (docs/interop/qcow2.txt).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use disk_io::{Error, Result};

use super::Compression;
use super::header::{MAGIC, MAX_BACKING_NAME, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, incompatible};
use crate::options::{CreateOptions, parse_size};

/// Header extension: backing file format name.
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Bytes of a version 3 header as qemu writes it (with the compression
/// type byte and its padding).
const V3_HEADER_LENGTH: u32 = 112;

/// How a new qcow2 image is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// 2 (`compat=0.10`) or 3 (`compat=1.1`, the default).
    pub version: u32,
    /// log2 of the cluster size (64 KiB by default).
    pub cluster_bits: u32,
    /// How compressed clusters are compressed.
    pub compression: Compression,
    /// Write every cluster compressed (front to back only).
    pub compress: bool,
    /// Backing file name, stored as given.
    pub backing_file: Option<String>,
    /// Backing file format, stored in a header extension.
    pub backing_format: Option<String>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            version: 3,
            cluster_bits: 16,
            compression: Compression::Zlib,
            compress: false,
            backing_file: None,
            backing_format: None,
        }
    }
}

/// Option keys a qcow2 image takes.
pub const KEYS: [&str; 10] = [
    "compat",
    "cluster_size",
    "compression_type",
    "compress",
    "backing_file",
    "backing_fmt",
    "extended_l2",
    "refcount_bits",
    "preallocation",
    "lazy_refcounts",
];

impl Params {
    /// The parameters `-o` options ask for, checked.
    pub fn from_options(o: &CreateOptions) -> Result<Params> {
        o.only(&KEYS, "qcow2")?;
        let mut p = Params::default();
        match o.get("compat") {
            None | Some("1.1" | "v3") => {}
            Some("0.10" | "v2") => p.version = 2,
            Some(v) => {
                return Err(Error::invalid_input(format!(
                    "format option compat={v}: expected 0.10 or 1.1"
                )));
            }
        }
        if let Some(v) = o.get("cluster_size") {
            let size = parse_size("cluster_size", v)?;
            let bits = size.trailing_zeros();
            if !size.is_power_of_two() || !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&bits) {
                return Err(Error::invalid_input(format!(
                    "format option cluster_size={v}: must be a power of two from 512 to 2M"
                )));
            }
            p.cluster_bits = bits;
        }
        match o.get("compression_type") {
            None | Some("zlib") => {}
            Some("zstd") => p.compression = Compression::Zstd,
            Some(v) => {
                return Err(Error::invalid_input(format!(
                    "format option compression_type={v}: expected zlib or zstd"
                )));
            }
        }
        if p.version == 2 && p.compression != Compression::Zlib {
            return Err(Error::invalid_input(
                "format option compression_type=zstd needs compat=1.1",
            ));
        }
        p.compress = o.flag("compress", false)?;
        if o.flag("extended_l2", false)? {
            return Err(Error::unsupported(
                "format option extended_l2=on (subclusters are read, not written yet)",
            ));
        }
        if o.flag("lazy_refcounts", false)? {
            return Err(Error::unsupported("format option lazy_refcounts=on"));
        }
        match o.get("refcount_bits") {
            None | Some("16") => {}
            Some(v) => {
                return Err(Error::unsupported(format!(
                    "format option refcount_bits={v} (only 16 is written)"
                )));
            }
        }
        match o.get("preallocation") {
            None | Some("off") => {}
            Some(v) => {
                return Err(Error::unsupported(format!(
                    "format option preallocation={v} (only off)"
                )));
            }
        }
        if let Some(name) = o.get("backing_file") {
            if name.is_empty() || name.len() > MAX_BACKING_NAME as usize {
                return Err(Error::invalid_input(format!(
                    "backing file name of {} bytes (1 to {MAX_BACKING_NAME})",
                    name.len()
                )));
            }
            p.backing_file = Some(name.into());
        }
        p.backing_format = o.get("backing_fmt").map(String::from);
        if p.backing_format.is_some() && p.backing_file.is_none() {
            return Err(Error::invalid_input(
                "format option backing_fmt without backing_file",
            ));
        }
        Ok(p)
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The first cluster of the image: header, extensions, backing file
    /// name. The L1 table offset is filled in once it is allocated.
    pub(crate) fn header_cluster(&self, size: u64, l1_size: u32) -> Result<Vec<u8>> {
        let cs = self.cluster_size();
        let mut h: Vec<u8> = Vec::with_capacity(cs as usize);
        let put32 = |h: &mut Vec<u8>, v: u32| h.extend_from_slice(&v.to_be_bytes());
        let put64 = |h: &mut Vec<u8>, v: u64| h.extend_from_slice(&v.to_be_bytes());
        put32(&mut h, MAGIC);
        put32(&mut h, self.version);
        put64(&mut h, 0); // backing file offset, set below
        put32(&mut h, 0); // backing file name length, set below
        put32(&mut h, self.cluster_bits);
        put64(&mut h, size);
        put32(&mut h, 0); // no encryption
        put32(&mut h, l1_size);
        put64(&mut h, 0); // L1 table offset, set once allocated
        put64(&mut h, cs); // refcount table in cluster 1
        put32(&mut h, 1);
        put32(&mut h, 0); // no snapshots
        put64(&mut h, 0);
        if self.version >= 3 {
            let incompat = if self.compression == Compression::Zstd {
                incompatible::COMPRESSION_TYPE
            } else {
                0
            };
            put64(&mut h, incompat);
            put64(&mut h, 0); // compatible features
            put64(&mut h, 0); // autoclear features
            put32(&mut h, 4); // 16-bit refcounts
            put32(&mut h, V3_HEADER_LENGTH);
            h.push(match self.compression {
                Compression::Zlib => 0,
                Compression::Zstd => 1,
            });
            h.resize(V3_HEADER_LENGTH as usize, 0);
        }
        if let Some(fmt) = &self.backing_format {
            put32(&mut h, EXT_BACKING_FORMAT);
            put32(&mut h, fmt.len() as u32);
            h.extend_from_slice(fmt.as_bytes());
            h.resize(h.len().div_ceil(8) * 8, 0);
        }
        put64(&mut h, 0); // end of extensions
        if let Some(name) = &self.backing_file {
            let at = h.len() as u64;
            h.extend_from_slice(name.as_bytes());
            let fields: Vec<u8> = at
                .to_be_bytes()
                .into_iter()
                .chain((name.len() as u32).to_be_bytes())
                .collect();
            if let Some(dst) = h.get_mut(8..20) {
                dst.copy_from_slice(&fields);
            }
        }
        if h.len() as u64 > cs {
            return Err(Error::invalid_input(format!(
                "qcow2 header with its backing file name needs {} bytes, more than the {cs}-byte cluster",
                h.len()
            )));
        }
        h.resize(cs as usize, 0);
        Ok(h)
    }
}
