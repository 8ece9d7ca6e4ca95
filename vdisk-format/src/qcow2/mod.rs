//! qcow2, versions 2 and 3: the guest disk through the L1 and L2 tables,
//! with zero clusters, extended L2 entries (32 subclusters per cluster)
//! and compressed clusters (zlib or zstd).
//!
//! An image with a backing file is opened with its parent disk given by the
//! caller ([`Qcow2::with_backing`]); finding and checking that parent is
//! the caller's policy (see `Image::open`), and so is finding an external
//! data file ([`Qcow2::with_files`]; raw or not). Encrypted images are
//! refused as `Unsupported`.

pub mod check;
#[cfg(feature = "std")]
pub mod commit;
#[cfg(feature = "std")]
pub mod create;
pub mod header;
#[cfg(feature = "std")]
mod refcount;
#[cfg(feature = "std")]
pub mod write;

use alloc::boxed::Box;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use disk_io::sync::Lock;
use disk_io::{Allocation, Error, Extent, ReadAt, Result, check_range, clamp_query};

pub use header::{Compression, Header};

/// Offset bits of L1 and standard L2 entries (9..55).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry: the cluster is compressed.
const COMPRESSED: u64 = 1 << 62;
/// L1/L2 entry: refcount exactly one (with an external data file, also
/// "allocated" for a cluster at host offset 0).
const COPIED: u64 = 1 << 63;
/// Standard L2 entry (v3): the cluster reads as zeros.
const ZERO: u64 = 1;
/// Subclusters per cluster with extended L2 entries.
const SUBCLUSTERS: u64 = 32;
/// Memory the L2 table cache may use.
const L2_CACHE_BYTES: u64 = 8 << 20;
/// Decompressed clusters kept (a 2 MiB cluster read in 256 KiB chunks
/// would otherwise be decompressed eight times).
const DECOMPRESSED_CACHE: usize = 4;

/// What one guest range maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    /// Not allocated in this image: reads from the backing file, or as
    /// zeros without one.
    Unallocated,
    /// Reads as zeros.
    Zero,
    /// Stored uncompressed at this host offset.
    Data(u64),
    /// Stored compressed: host offset and compressed length of the cluster.
    Compressed(u64, u64),
}

impl Unit {
    fn allocation(self) -> Allocation {
        match self {
            Unit::Unallocated => Allocation::Unallocated,
            Unit::Zero => Allocation::Zero,
            Unit::Data(_) | Unit::Compressed(..) => Allocation::Data,
        }
    }
}

#[derive(Default)]
struct Caches {
    /// L2 tables by file offset.
    l2: Lru<Vec<u64>>,
    /// Decompressed clusters by the file offset of their compressed data.
    clusters: Lru<Vec<u8>>,
    /// Idle zstd decoders, one per thread that has used one.
    zstd: Vec<ZstdDecoder>,
}

pub(crate) use crate::cache::Lru;
pub use crate::chain::Backing;
use crate::chain::{extend_run, layer_answer, read_parent};

/// A qcow2 image read from `D`.
///
/// ```no_run
/// use disk_io::{FileDisk, ReadAt};
/// let image = vdisk_format::qcow2::Qcow2::open(FileDisk::open("disk.qcow2")?)?;
/// let mut mbr = [0u8; 512];
/// image.read_at(0, &mut mbr)?;
/// # Ok::<(), disk_io::Error>(())
/// ```
pub struct Qcow2<D> {
    file: D,
    /// The external data file, for images that keep guest data apart.
    data: Option<Backing>,
    backing: Option<Backing>,
    header: Header,
    l1: Vec<u64>,
    caches: Lock<Caches>,
    l2_cache_tables: usize,
}

impl<D: ReadAt> Qcow2<D> {
    /// Opens the qcow2 image stored in `file`, which must not name a
    /// backing file.
    pub fn open(file: D) -> Result<Self> {
        Qcow2::with_backing(file, None)
    }

    /// Opens the qcow2 image stored in `file` on top of `backing`, which
    /// must be given exactly when the header names a backing file.
    pub fn with_backing(file: D, backing: Option<Backing>) -> Result<Self> {
        Qcow2::with_files(file, backing, None)
    }

    /// Opens the qcow2 image stored in `file` on top of `backing`, with
    /// its guest data in `data` when the header says it has an external
    /// data file (which must then be given; finding it is the caller's
    /// policy, as for the backing file).
    pub fn with_files(file: D, backing: Option<Backing>, data: Option<Backing>) -> Result<Self> {
        let header = Header::read(&file)?;
        match (&header.data_file, &data) {
            (Some(name), None) => {
                return Err(Error::invalid_input(format!(
                    "qcow2 image keeps its data in the external file '{name}': open it with that file"
                ))
                .at(72));
            }
            (None, Some(_)) => {
                return Err(Error::invalid_input(
                    "qcow2 image has no external data file, but one was given",
                ));
            }
            _ => {}
        }
        match (&header.backing_file, &backing) {
            (Some(name), None) => {
                return Err(Error::invalid_input(format!(
                    "qcow2 image has backing file '{name}': open it with its parent"
                ))
                .at(8));
            }
            (None, Some(_)) => {
                return Err(Error::invalid_input(
                    "qcow2 image has no backing file, but a parent was given",
                ));
            }
            _ => {}
        }
        let l1_bytes =
            disk_io::read_vec(&file, header.l1_table_offset, header.l1_size as usize * 8)?;
        let l1 = l1_bytes
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let l2_cache_tables = (L2_CACHE_BYTES / header.cluster_size()).max(4) as usize;
        Ok(Qcow2 {
            file,
            data,
            backing,
            header,
            l1,
            caches: Lock::new(Caches::default()),
            l2_cache_tables,
        })
    }

    /// The checked header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file holding the image.
    pub fn file(&self) -> &D {
        &self.file
    }

    /// The parent disk, when the image has one.
    pub fn backing(&self) -> Option<&Backing> {
        self.backing.as_ref()
    }

    /// Entry `index` of the L2 table at `l2_offset` (with extended L2, the
    /// entry and its subcluster bitmap; otherwise the entry and 0).
    fn l2_entry(&self, l2_offset: u64, index: u64) -> Result<(u64, u64)> {
        let h = &self.header;
        let per = if h.extended_l2() { 2 } else { 1 };
        let at = (index * per) as usize;
        let entry_in = |t: &Vec<u64>| {
            (
                t.get(at).copied().unwrap_or(0),
                t.get(at + 1).copied().unwrap_or(0),
            )
        };
        let hit = self
            .caches
            .with_write(|c| Ok(c.l2.get(l2_offset).map(entry_in)))?;
        if let Some(e) = hit {
            return Ok(e);
        }
        let cs = h.cluster_size();
        if !l2_offset.is_multiple_of(cs)
            || l2_offset
                .checked_add(cs)
                .is_none_or(|end| end > self.file.size())
        {
            return Err(Error::corrupt(
                format!(
                    "qcow2 L2 table at {l2_offset:#x} is unaligned or past the end of the file"
                ),
                l2_offset,
            ));
        }
        let bytes = disk_io::read_vec(&self.file, l2_offset, cs as usize)?;
        let table: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let entry = entry_in(&table);
        let max = self.l2_cache_tables;
        self.caches.with_write(|c| {
            c.l2.insert(l2_offset, table, max);
            Ok(())
        })?;
        Ok(entry)
    }

    /// The mapping of guest offset `pos`, and the guest range `start..end`
    /// it holds for (a cluster, a subcluster, or all the guest an empty L1
    /// entry covers), clamped to the disk size.
    fn unit_at(&self, pos: u64) -> Result<(Unit, u64, u64)> {
        let h = &self.header;
        let cs = h.cluster_size();
        let cluster = pos >> h.cluster_bits;
        let l2_entries = h.l2_entries();
        let l1_index = cluster / l2_entries;
        let l1e = self.l1.get(l1_index as usize).copied().unwrap_or(0);
        let l2_offset = l1e & OFFSET_MASK;
        let clamp = |start: u64, end: u64| (start, end.min(h.size));
        if l2_offset == 0 {
            let span = l2_entries * cs;
            let (s, e) = clamp(l1_index * span, (l1_index + 1) * span);
            return Ok((Unit::Unallocated, s, e));
        }
        let (entry, bitmap) = self.l2_entry(l2_offset, cluster % l2_entries)?;
        let cluster_start = cluster << h.cluster_bits;
        let entry_at = l2_offset + (cluster % l2_entries) * h.l2_entry_size();
        if entry & COMPRESSED != 0 {
            if self.data.is_some() {
                return Err(Error::corrupt(
                    "qcow2 compressed cluster in an image with an external data file",
                    entry_at,
                ));
            }
            let x = 62 - (h.cluster_bits - 8);
            let host = entry & ((1u64 << x) - 1);
            let sectors = (entry >> x) & ((1u64 << (h.cluster_bits - 8)) - 1);
            let len = (sectors + 1) * 512 - (host & 511);
            let (s, e) = clamp(cluster_start, cluster_start + cs);
            return Ok((Unit::Compressed(host, len), s, e));
        }
        let host = entry & OFFSET_MASK;
        if h.extended_l2() {
            if entry & ZERO != 0 {
                return Err(Error::corrupt(
                    "qcow2 extended L2 entry with the zero bit set",
                    entry_at,
                ));
            }
            let sub_size = cs / SUBCLUSTERS;
            let sub = (pos - cluster_start) / sub_size;
            let allocated = bitmap >> sub & 1 != 0;
            let zero = bitmap >> (32 + sub) & 1 != 0;
            let start = cluster_start + sub * sub_size;
            let (s, e) = clamp(start, start + sub_size);
            return match (allocated, zero) {
                (true, true) => Err(Error::corrupt(
                    format!("qcow2 subcluster {sub} both allocated and zero"),
                    entry_at + 8,
                )),
                (true, false) => {
                    self.check_host(host, entry_at)?;
                    Ok((Unit::Data(host + sub * sub_size), s, e))
                }
                (false, true) => Ok((Unit::Zero, s, e)),
                (false, false) => Ok((Unit::Unallocated, s, e)),
            };
        }
        let (s, e) = clamp(cluster_start, cluster_start + cs);
        if h.version >= 3 && entry & ZERO != 0 {
            return Ok((Unit::Zero, s, e));
        }
        // Offset 0 is unallocated, except in an external data file when
        // bit 63 says the cluster is there (at the file's start).
        if host == 0 && !(self.data.is_some() && entry & COPIED != 0) {
            return Ok((Unit::Unallocated, s, e));
        }
        self.check_host(host, entry_at)?;
        Ok((Unit::Data(host), s, e))
    }

    fn check_host(&self, host: u64, entry_at: u64) -> Result<()> {
        // Data lives in the external data file when there is one; a raw
        // one may hold its first cluster at offset 0.
        let (end, zero_ok) = match &self.data {
            Some(d) => (d.size(), true),
            None => (self.file.size(), false),
        };
        if (host == 0 && !zero_ok)
            || !host.is_multiple_of(self.header.cluster_size())
            || host >= end
        {
            return Err(Error::corrupt(
                format!(
                    "qcow2 L2 entry points to {host:#x}: unaligned or past the end of the file"
                ),
                entry_at,
            ));
        }
        Ok(())
    }

    /// Reads host bytes; a data cluster may end past the end of the file
    /// (qemu does not always write the tail of the last one): that part
    /// reads as zeros.
    fn read_host(&self, host: u64, buf: &mut [u8]) -> Result<()> {
        let file: &dyn ReadAt = match &self.data {
            Some(d) => d,
            None => &self.file,
        };
        let available = file.size().saturating_sub(host).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(available);
        file.read_at(host, head)?;
        tail.fill(0);
        Ok(())
    }

    /// Copies `out.len()` bytes of the compressed cluster at `host` from
    /// byte `skip` of the decompressed cluster.
    fn read_compressed(&self, host: u64, len: u64, skip: usize, out: &mut [u8]) -> Result<()> {
        let copied = self.caches.with_write(|c| {
            Ok(c.clusters
                .get(host)
                .and_then(|data| data.get(skip..skip + out.len()))
                .map(|src| out.copy_from_slice(src)))
        })?;
        if copied.is_some() {
            return Ok(());
        }
        let cs = self.header.cluster_size() as usize;
        if host >= self.file.size() || len > 2 * cs as u64 + 512 {
            return Err(Error::corrupt(
                format!(
                    "qcow2 compressed cluster at {host:#x} ({len} bytes) past the end of the file"
                ),
                host,
            ));
        }
        let input_len = len.min(self.file.size() - host) as usize;
        let input = disk_io::read_vec(&self.file, host, input_len)?;
        let mut data = vec![0u8; cs];
        let written = match self.header.compression {
            Compression::Zlib => inflate(&input, &mut data),
            Compression::Zstd => self.unzstd(&input, &mut data)?,
        };
        if written != Some(cs) {
            return Err(Error::corrupt(
                format!("qcow2 compressed cluster at {host:#x} does not decompress to {cs} bytes"),
                host,
            ));
        }
        out.copy_from_slice(data.get(skip..skip + out.len()).unwrap_or(&[]));
        self.caches.with_write(|c| {
            c.clusters.insert(host, data, DECOMPRESSED_CACHE);
            Ok(())
        })
    }
}

impl<D: ReadAt> Qcow2<D> {
    /// Decodes a zstd cluster with a decoder from the pool.
    fn unzstd(&self, input: &[u8], out: &mut [u8]) -> Result<Option<usize>> {
        let Some(mut decoder) = self
            .caches
            .with_write(|c| Ok(c.zstd.pop()))?
            .or_else(new_zstd)
        else {
            return Ok(None);
        };
        let n = zstd_frame(&mut decoder, input, out);
        self.caches.with_write(|c| {
            c.zstd.push(decoder);
            Ok(())
        })?;
        Ok(n)
    }
}

/// Raw deflate into `out`; the number of bytes produced.
fn inflate(input: &[u8], out: &mut [u8]) -> Option<usize> {
    use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
    let mut state = Box::new(DecompressorOxide::new());
    let (_, _, written) = decompress(
        &mut state,
        input,
        out,
        0,
        inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
    );
    Some(written)
}

/// A reusable zstd decoder: libzstd with `std`, pure-Rust ruzstd without.
#[cfg(feature = "std")]
type ZstdDecoder = zstd::bulk::Decompressor<'static>;
/// A reusable zstd decoder: libzstd with `std`, pure-Rust ruzstd without.
#[cfg(not(feature = "std"))]
type ZstdDecoder = Box<ruzstd::decoding::FrameDecoder>;

#[cfg(feature = "std")]
fn new_zstd() -> Option<ZstdDecoder> {
    zstd::bulk::Decompressor::new().ok()
}

#[cfg(not(feature = "std"))]
fn new_zstd() -> Option<ZstdDecoder> {
    Some(Box::new(ruzstd::decoding::FrameDecoder::new()))
}

/// The one zstd frame at the start of `input` (sector padding follows it)
/// into `out`; the number of bytes produced.
#[cfg(feature = "std")]
fn zstd_frame(decoder: &mut ZstdDecoder, input: &[u8], out: &mut [u8]) -> Option<usize> {
    let frame = zstd::zstd_safe::find_frame_compressed_size(input).ok()?;
    decoder.decompress_to_buffer(input.get(..frame)?, out).ok()
}

/// The one zstd frame at the start of `input` (sector padding follows it)
/// into `out`; the number of bytes produced.
#[cfg(not(feature = "std"))]
fn zstd_frame(decoder: &mut ZstdDecoder, input: &[u8], out: &mut [u8]) -> Option<usize> {
    use ruzstd::decoding::BlockDecodingStrategy;
    use ruzstd::io::Read;
    let mut src = input;
    decoder.reset(&mut src).ok()?;
    decoder
        .decode_blocks(&mut src, BlockDecodingStrategy::UptoBytes(out.len() + 1))
        .ok()?;
    let mut written = 0;
    loop {
        let rest = out.get_mut(written..)?;
        if rest.is_empty() {
            break;
        }
        let n = decoder.read(rest).ok()?;
        if n == 0 {
            break;
        }
        written += n;
    }
    Some(written)
}

impl<D: ReadAt> ReadAt for Qcow2<D> {
    fn size(&self) -> u64 {
        self.header.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.header.size, offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (unit, start, end) = self.unit_at(pos)?;
            let mut n = (end - pos).min((buf.len() - done) as u64) as usize;
            match unit {
                Unit::Zero => buf.get_mut(done..done + n).unwrap_or(&mut []).fill(0),
                Unit::Unallocated => {
                    read_parent(
                        self.backing.as_ref(),
                        pos,
                        buf.get_mut(done..done + n).unwrap_or(&mut []),
                    )?;
                }
                Unit::Data(host) => {
                    let host = host + (pos - start);
                    // Coalesce clusters that follow each other in the file too.
                    while done + n < buf.len() {
                        let next = pos + n as u64;
                        match self.unit_at(next)? {
                            (Unit::Data(h), s, e) if s == next && h == host + n as u64 => {
                                n += (e - next).min((buf.len() - done - n) as u64) as usize;
                            }
                            _ => break,
                        }
                    }
                    self.read_host(host, buf.get_mut(done..done + n).unwrap_or(&mut []))?;
                }
                Unit::Compressed(host, len) => {
                    let skip = (pos - start) as usize;
                    self.read_compressed(
                        host,
                        len,
                        skip,
                        buf.get_mut(done..done + n).unwrap_or(&mut []),
                    )?;
                }
            }
            done += n;
        }
        Ok(())
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        let length = clamp_query(self.header.size, offset, length)?;
        let end = offset + length;
        let (unit, _, first_end) = self.unit_at(offset)?;
        let state = unit.allocation();
        let stop = extend_run(first_end.min(end), end, state, |pos| {
            let (u, _, e) = self.unit_at(pos)?;
            Ok(Some((u.allocation(), e)))
        })?;
        layer_answer(self.backing.as_ref(), offset, stop, state)
    }
}

/// Opens a qcow2 image file for `Image`: its parent through the caller's
/// policy (checked against the backing format the header names).
#[cfg(feature = "std")]
pub(crate) fn open_layer(
    file: alloc::sync::Arc<disk_io::FileDisk>,
    ctx: &mut crate::image::OpenContext<'_>,
) -> Result<crate::image::Layer> {
    let header = Header::read(&*file)?;
    let backing = match &header.backing_file {
        None => None,
        Some(name) => {
            let expect = match &header.backing_format {
                None => None,
                Some(fmt) => Some(fmt.parse::<crate::Format>().map_err(|_| {
                    Error::corrupt(
                        format!("qcow2 backing format '{fmt}' is not a format this reader knows"),
                        u64::from(header.header_length),
                    )
                })?),
            };
            Some(ctx.open_parent(name, expect)?.into_guest())
        }
    };
    // The data file is found under the same path policy as parents.
    let data = match &header.data_file {
        None => None,
        Some(name) => {
            let path = ctx.resolve(name, "external data file")?;
            let disk = disk_io::FileDisk::open(&path)
                .map_err(|e| e.context(format!("external data file {}", path.display())))?;
            Some(Box::new(disk) as Backing)
        }
    };
    let q = Qcow2::with_files(file, backing, data)?;
    let cluster_size = Some(q.header().cluster_size());
    Ok(crate::image::Layer {
        guest: Box::new(q),
        subformat: None,
        cluster_size,
        extra_allocated: 0,
    })
}
