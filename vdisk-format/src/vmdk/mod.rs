//! VMDK (VMware Virtual Disk Format 5.0): hosted sparse extents (`KDMV`,
//! monolithicSparse and twoGbMaxExtentSparse), streamOptimized extents
//! (compressed grains behind markers, grain directory in the footer), flat
//! and zero extents, all under a text descriptor (embedded in a sparse
//! extent, or a file of its own), and delta links to a parent disk.
//!
//! ESX formats are refused as `Unsupported` by name: COWD (`VMFSSPARSE`
//! extents in the ESX format), seSparse and raw device mappings.
//!
//! The reader works on any [`ReadAt`]: [`Vmdk::open_sparse`] reads a
//! monolithic sparse extent from bytes; [`Vmdk::from_descriptor`] builds a
//! disk from a descriptor and extent files the caller opens (finding those
//! files is the caller's path policy, see `Image::open`).

pub mod check;
#[cfg(feature = "std")]
pub mod create;
pub mod descriptor;
pub mod grain_table;
pub mod sparse_extent;
pub mod sparse_header;
pub mod stream;
#[cfg(feature = "std")]
pub mod stream_write;
#[cfg(feature = "std")]
pub mod write;

use alloc::format;
use alloc::vec::Vec;

use disk_io::{Allocation, Error, Extent, ReadAt, Result, check_range, clamp_query};

pub use crate::chain::Backing;
use crate::chain::{extend_run, layer_answer, read_parent};
pub use descriptor::{Access, Descriptor, ExtentKind, ExtentLine};
use grain_table::Grain;
pub use sparse_extent::SparseExtent;
pub use sparse_header::SparseHeader;
use sparse_header::{MAX_CAPACITY_SECTORS, SECTOR};

/// `COWD`, the ESX sparse extent magic, read as a little-endian `u32`.
const COWD_MAGIC: u32 = 0x4457_4f43;

/// What holds the guest bytes of one extent.
pub enum ExtentData<D> {
    /// A hosted sparse (or streamOptimized) extent file.
    Sparse(SparseExtent<D>),
    /// A flat file, from this byte offset.
    Flat {
        /// The file.
        file: D,
        /// Byte offset of the extent's first guest byte in the file.
        offset: u64,
    },
    /// No file: reads as zeros.
    Zero,
}

impl<D: ReadAt> ExtentData<D> {
    /// Checks an extent line against the file it names and makes the
    /// extent: sparse extents must be hosted sparse (`KDMV`) files; ESX
    /// formats are refused by name.
    pub fn open(line: &ExtentLine, file: Option<D>) -> Result<ExtentData<D>> {
        let name = line.file.as_deref().unwrap_or("");
        let unsupported = |what: &str| {
            Err(Error::unsupported(format!("vmdk {what} extent '{name}'")).at(line.line_at))
        };
        match &line.kind {
            ExtentKind::Zero => return Ok(ExtentData::Zero),
            ExtentKind::SeSparse => return unsupported("seSparse (SESPARSE)"),
            ExtentKind::RawDevice(kind) => {
                return unsupported(&format!("raw device mapping ({kind})"));
            }
            ExtentKind::Other(kind) => return unsupported(&format!("type {kind}")),
            _ => {}
        }
        let Some(file) = file else {
            return Err(Error::invalid_input(format!(
                "vmdk extent '{name}' has no file"
            )));
        };
        match line.kind {
            ExtentKind::Flat | ExtentKind::Vmfs => {
                let offset = line.offset.checked_mul(SECTOR).ok_or_else(|| {
                    Error::corrupt(
                        format!("vmdk extent '{name}' offset overflows"),
                        line.line_at,
                    )
                })?;
                Ok(ExtentData::Flat { file, offset })
            }
            _ => {
                let mut magic = [0u8; 4];
                if file.size() >= 4 {
                    file.read_at(0, &mut magic)?;
                }
                let magic = u32::from_le_bytes(magic);
                if magic == COWD_MAGIC {
                    return unsupported(&format!("{} in the ESX COWD format", line.kind.as_str()));
                }
                if magic != sparse_header::MAGIC && line.kind == ExtentKind::VmfsSparse {
                    return unsupported("VMFSSPARSE (not in the hosted sparse format)");
                }
                if magic != sparse_header::MAGIC {
                    return Err(Error::corrupt(
                        format!(
                            "vmdk {} extent '{name}' is not a hosted sparse extent (no KDMV magic)",
                            line.kind.as_str()
                        ),
                        0,
                    ));
                }
                let sparse = SparseExtent::open(file)
                    .map_err(|e| e.context(format!("vmdk extent '{name}'")))?;
                if line.sectors > sparse.header().capacity {
                    return Err(Error::corrupt(
                        format!(
                            "vmdk extent '{name}' of {} sectors is larger than its file's capacity of {} sectors",
                            line.sectors,
                            sparse.header().capacity
                        ),
                        line.line_at,
                    ));
                }
                Ok(ExtentData::Sparse(sparse))
            }
        }
    }
}

struct Piece<D> {
    /// Guest offset of the extent's first byte.
    start: u64,
    /// Guest bytes of the extent.
    len: u64,
    data: ExtentData<D>,
}

/// A VMDK disk read from extent files of type `D`.
///
/// ```no_run
/// use disk_io::{FileDisk, ReadAt};
/// let disk = vdisk_format::vmdk::Vmdk::open_sparse(FileDisk::open("disk.vmdk")?)?;
/// let mut mbr = [0u8; 512];
/// disk.read_at(0, &mut mbr)?;
/// # Ok::<(), disk_io::Error>(())
/// ```
pub struct Vmdk<D> {
    pieces: Vec<Piece<D>>,
    size: u64,
    backing: Option<Backing>,
    descriptor: Descriptor,
}

impl<D: ReadAt> Vmdk<D> {
    /// Opens the monolithic sparse (or streamOptimized) extent in `file`,
    /// which must not name a parent.
    pub fn open_sparse(file: D) -> Result<Self> {
        Vmdk::sparse_with_backing(file, None)
    }

    /// Opens the monolithic sparse extent in `file` over `backing`, which
    /// must be given exactly when its embedded descriptor names a parent.
    pub fn sparse_with_backing(file: D, backing: Option<Backing>) -> Result<Self> {
        let descriptor = embedded_descriptor(&file)?;
        let capacity = SparseHeader::read(&file)?.capacity;
        // The embedded descriptor describes this very extent: a capacity
        // that disagrees with it is a damaged header (or descriptor).
        let described = descriptor
            .extents
            .iter()
            .try_fold(0u64, |sum, e| sum.checked_add(e.sectors));
        if !descriptor.extents.is_empty() && described != Some(capacity) {
            return Err(Error::corrupt(
                format!(
                    "vmdk sparse header capacity of {capacity} sectors differs from the {} sectors of its embedded descriptor's extents",
                    described.unwrap_or(u64::MAX)
                ),
                12,
            ));
        }
        let sparse = SparseExtent::open(file)?;
        let len = sparse.size();
        Vmdk::assemble(
            descriptor,
            alloc::vec![Piece {
                start: 0,
                len,
                data: ExtentData::Sparse(sparse),
            }],
            backing,
        )
    }

    /// Builds the disk of `descriptor` from its extents, opened by the
    /// caller in order (see [`ExtentData::open`]), over `backing`, which
    /// must be given exactly when the descriptor names a parent file.
    pub fn from_descriptor(
        descriptor: Descriptor,
        extents: Vec<ExtentData<D>>,
        backing: Option<Backing>,
    ) -> Result<Self> {
        if extents.len() != descriptor.extents.len() {
            return Err(Error::invalid_input(format!(
                "vmdk descriptor has {} extents, {} were given",
                descriptor.extents.len(),
                extents.len()
            )));
        }
        let mut pieces = Vec::with_capacity(extents.len());
        let mut start = 0u64;
        for (line, data) in descriptor.extents.iter().zip(extents) {
            let len = line
                .sectors
                .checked_mul(SECTOR)
                .filter(|_| line.sectors <= MAX_CAPACITY_SECTORS)
                .ok_or_else(|| Error::corrupt("vmdk extent too large", line.line_at))?;
            pieces.push(Piece { start, len, data });
            start = start
                .checked_add(len)
                .filter(|s| *s <= MAX_CAPACITY_SECTORS * SECTOR)
                .ok_or_else(|| Error::corrupt("vmdk disk too large", line.line_at))?;
        }
        Vmdk::assemble(descriptor, pieces, backing)
    }

    fn assemble(
        descriptor: Descriptor,
        pieces: Vec<Piece<D>>,
        backing: Option<Backing>,
    ) -> Result<Self> {
        check_parent(&descriptor, backing.is_some())?;
        let size = pieces.last().map_or(0, |p| p.start + p.len);
        Ok(Vmdk {
            pieces: pieces.into_iter().filter(|p| p.len > 0).collect(),
            size,
            backing,
            descriptor,
        })
    }

    /// The descriptor (embedded, or the descriptor file's).
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// The parent disk, when there is one.
    pub fn backing(&self) -> Option<&Backing> {
        self.backing.as_ref()
    }

    /// Grain size in bytes of the first sparse extent, if any.
    pub fn grain_size(&self) -> Option<u64> {
        self.pieces.iter().find_map(|p| match &p.data {
            ExtentData::Sparse(s) => Some(s.header().grain_size()),
            _ => None,
        })
    }

    /// The extent holding guest byte `pos`.
    fn piece_at(&self, pos: u64) -> Result<&Piece<D>> {
        let i = self.pieces.partition_point(|p| p.start + p.len <= pos);
        self.pieces
            .get(i)
            .filter(|p| p.start <= pos)
            .ok_or_else(|| Error::out_of_range(pos, 1, self.size))
    }
}

/// Parses the embedded descriptor of the sparse extent in `file`, or
/// gives an empty one when it has none.
pub fn embedded_descriptor<D: ReadAt + ?Sized>(file: &D) -> Result<Descriptor> {
    let header = SparseHeader::read(file)?;
    match sparse_header::read_embedded_descriptor(file, &header)? {
        Some(text) => {
            let at = header.descriptor_offset * SECTOR;
            Descriptor::parse(&text, at).map_err(|e| e.context("vmdk embedded descriptor"))
        }
        None => Ok(Descriptor::default()),
    }
}

/// Reads the descriptor of a VMDK file: the embedded one of a sparse
/// extent, or the whole text of a descriptor file (at most
/// [`descriptor::MAX_DESCRIPTOR_FILE`] bytes).
pub fn read_descriptor<D: ReadAt + ?Sized>(file: &D) -> Result<Descriptor> {
    let mut magic = [0u8; 4];
    if file.size() >= 4 {
        file.read_at(0, &mut magic)?;
    }
    if u32::from_le_bytes(magic) == sparse_header::MAGIC {
        return embedded_descriptor(file);
    }
    if file.size() > descriptor::MAX_DESCRIPTOR_FILE {
        return Err(Error::unsupported(format!(
            "vmdk descriptor file of {} bytes (at most {} read)",
            file.size(),
            descriptor::MAX_DESCRIPTOR_FILE
        )));
    }
    let text = disk_io::read_vec(file, 0, file.size() as usize)?;
    Descriptor::parse(&text, 0)
}

/// What a guest range maps to, at the VMDK layer.
enum Unit {
    Unallocated,
    Zero,
    Data(u64),
    Compressed(u64),
    /// Flat file byte.
    Flat(u64),
}

impl<D: ReadAt> Vmdk<D> {
    /// The mapping of guest byte `pos` and the guest range `start..end` it
    /// holds for, plus the extent.
    fn unit_at(&self, pos: u64) -> Result<(Unit, u64, u64, &Piece<D>)> {
        let p = self.piece_at(pos)?;
        let local = pos - p.start;
        let (unit, s, e) = match &p.data {
            ExtentData::Zero => (Unit::Zero, 0, p.len),
            ExtentData::Flat { offset, .. } => {
                (Unit::Flat(offset.saturating_add(local)), local, p.len)
            }
            ExtentData::Sparse(sp) => {
                let (g, s, e) = sp.grain_at(local)?;
                let u = match g {
                    Grain::Unallocated => Unit::Unallocated,
                    Grain::Zero => Unit::Zero,
                    Grain::Data(h) => Unit::Data(h + (local - s)),
                    Grain::Compressed(h) => Unit::Compressed(h),
                };
                (u, s, e)
            }
        };
        Ok((unit, p.start + s, p.start + e.min(p.len), p))
    }
}

impl<D: ReadAt> ReadAt for Vmdk<D> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (unit, start, end, piece) = self.unit_at(pos)?;
            let mut n = (end - pos).min((buf.len() - done) as u64) as usize;
            if n == 0 {
                return Err(Error::corrupt("vmdk extent map is empty here", pos));
            }
            match (unit, &piece.data) {
                (Unit::Zero, _) => buf.get_mut(done..done + n).unwrap_or(&mut []).fill(0),
                (Unit::Unallocated, _) => read_parent(
                    self.backing.as_ref(),
                    pos,
                    buf.get_mut(done..done + n).unwrap_or(&mut []),
                )?,
                (Unit::Flat(host), ExtentData::Flat { file, .. }) => {
                    let out = buf.get_mut(done..done + n).unwrap_or(&mut []);
                    let available = file.size().saturating_sub(host).min(n as u64) as usize;
                    let (head, tail) = out.split_at_mut(available);
                    file.read_at(host, head)?;
                    tail.fill(0);
                }
                (Unit::Data(host), ExtentData::Sparse(sp)) => {
                    // Coalesce grains that follow each other in the file too.
                    while done + n < buf.len() {
                        let next = pos + n as u64;
                        if next >= piece.start + piece.len {
                            break;
                        }
                        match self.unit_at(next)? {
                            (Unit::Data(h), s, e, _) if s == next && h == host + n as u64 => {
                                n += (e - next).min((buf.len() - done - n) as u64) as usize;
                            }
                            _ => break,
                        }
                    }
                    sp.read_host(host, buf.get_mut(done..done + n).unwrap_or(&mut []))?;
                }
                (Unit::Compressed(host), ExtentData::Sparse(sp)) => {
                    let skip = (pos - start) as usize;
                    sp.read_compressed(host, skip, buf.get_mut(done..done + n).unwrap_or(&mut []))?;
                }
                _ => return Err(Error::corrupt("vmdk extent map mismatch", pos)),
            }
            done += n;
        }
        Ok(())
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        let length = clamp_query(self.size, offset, length)?;
        let end = offset + length;
        let (unit, _, first_end, piece) = self.unit_at(offset)?;
        if let (Unit::Flat(host), ExtentData::Flat { file, .. }) = (&unit, &piece.data) {
            let want = first_end.min(end) - offset;
            let fsize = file.size();
            if *host >= fsize {
                return Ok(Extent::new(offset, want, Allocation::Zero));
            }
            let e = file.allocation(*host, want.min(fsize - host))?;
            let state = match e.state {
                Allocation::Data => Allocation::Data,
                _ => Allocation::Zero,
            };
            return Ok(Extent::new(offset, e.length.clamp(1, want), state));
        }
        let state = |u: &Unit| match u {
            Unit::Unallocated => Allocation::Unallocated,
            Unit::Zero => Allocation::Zero,
            _ => Allocation::Data,
        };
        let first = state(&unit);
        // Merge following grains of the same state; a flat extent ends the run.
        let stop = extend_run(first_end.min(end), end, first, |pos| {
            let (u, _, e, p) = self.unit_at(pos)?;
            Ok((!matches!(p.data, ExtentData::Flat { .. })).then(|| (state(&u), e)))
        })?;
        layer_answer(self.backing.as_ref(), offset, stop, first)
    }
}

/// Opens a VMDK file for `Image`: a sparse extent with its embedded
/// descriptor, or a descriptor file with its extents (found under the
/// caller's path policy), and the parent its `parentFileNameHint` names,
/// whose `CID` must be the child's `parentCID`.
#[cfg(feature = "std")]
pub(crate) fn open_layer(
    file: alloc::sync::Arc<disk_io::FileDisk>,
    detected: crate::Detected,
    ctx: &mut crate::image::OpenContext<'_>,
) -> Result<crate::image::Layer> {
    use alloc::boxed::Box;
    use alloc::sync::Arc;
    use disk_io::FileDisk;

    let descriptor = match detected {
        crate::Detected::VmdkCowd => {
            return Err(Error::unsupported(
                "vmdk ESX sparse extent (COWD): only hosted sparse extents are read",
            ));
        }
        crate::Detected::VmdkSparse => embedded_descriptor(&*file)?,
        _ => read_descriptor(&*file)?,
    };
    // The extent files first: a missing extent is named before anything
    // the parent may say.
    let mut extents = Vec::new();
    let mut extra_allocated = 0u64;
    if detected != crate::Detected::VmdkSparse {
        for line in &descriptor.extents {
            let f = match (&line.kind, &line.file) {
                (ExtentKind::Zero, _) | (_, None) => None,
                (_, Some(name)) => {
                    let path = ctx.resolve(name, "extent").map_err(|e| e.context("vmdk"))?;
                    let disk = FileDisk::open(&path).map_err(|e| {
                        e.context(format!("vmdk extent '{name}' ({})", path.display()))
                    })?;
                    extra_allocated = extra_allocated.saturating_add(disk.allocated_bytes()?);
                    Some(Arc::new(disk))
                }
            };
            extents.push(ExtentData::open(line, f)?);
        }
    }
    let backing = match descriptor.parent_file_name_hint.clone() {
        None => None,
        Some(hint) => {
            let parent = ctx.open_parent(&hint, Some(crate::Format::Vmdk))?;
            let theirs = read_descriptor(&**parent.file())
                .map_err(|e| e.context(format!("parent '{hint}'")))?;
            if let (Some(want), Some(have)) = (descriptor.parent_cid, theirs.cid) {
                if want != have {
                    ctx.damaged(Error::corrupt(
                        format!(
                            "vmdk parentCID {want:08x} of {} differs from the CID {have:08x} of its parent '{hint}': the parent changed after the child was made",
                            ctx.path().display()
                        ),
                        0,
                    ))?;
                }
            }
            Some(parent.into_guest())
        }
    };
    let create_type: Option<alloc::string::String> = descriptor.create_type.clone();
    let vmdk = if detected == crate::Detected::VmdkSparse {
        Vmdk::sparse_with_backing(file, backing)?
    } else {
        Vmdk::from_descriptor(descriptor, extents, backing)?
    };
    let cluster_size = vmdk.grain_size();
    Ok(crate::image::Layer {
        guest: Box::new(vmdk),
        subformat: create_type,
        cluster_size,
        extra_allocated,
    })
}

/// Checks a VMDK file for `vdisk check`: a sparse extent itself, or each
/// extent a descriptor names (found under `opts`, as when opening).
#[cfg(feature = "std")]
pub(crate) fn check_layer(
    detected: crate::Detected,
    file: &disk_io::FileDisk,
    path: &std::path::Path,
    opts: &crate::OpenOptions,
) -> Result<crate::CheckReport> {
    use alloc::string::ToString;
    use disk_io::FileDisk;

    let mut report = crate::CheckReport::default();
    let name = path.display().to_string();
    match detected {
        crate::Detected::VmdkCowd => {
            return Err(Error::unsupported(
                "vmdk ESX sparse extent (COWD): only hosted sparse extents are checked",
            ));
        }
        crate::Detected::VmdkSparse => check::check_sparse(file, &name, &mut report)?,
        _ => {
            let descriptor = read_descriptor(file)?;
            for line in &descriptor.extents {
                let Some(extent) = &line.file else { continue };
                if line.kind == ExtentKind::Zero {
                    continue;
                }
                let opened = crate::image::resolve_named(path, extent, "extent", opts)
                    .and_then(|p| FileDisk::open(&p).map(|f| (p, f)));
                let (p, f) = match opened {
                    Ok(x) => x,
                    Err(e) => {
                        report.error(format!("{name}: extent '{extent}': {e}"));
                        continue;
                    }
                };
                match line.kind {
                    ExtentKind::Sparse | ExtentKind::VmfsSparse => {
                        check::check_sparse(&f, &p.display().to_string(), &mut report)?;
                    }
                    ExtentKind::Flat | ExtentKind::Vmfs => {
                        let need = line
                            .offset
                            .saturating_add(line.sectors)
                            .saturating_mul(SECTOR);
                        if f.size() < need {
                            report.error(format!(
                                "{name}: flat extent '{extent}' holds {} bytes, the descriptor line at offset {:#x} needs {need}",
                                f.size(),
                                line.line_at
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(report)
}

/// Creates a new VMDK disk for `create_output`: the subformat and the rest
/// as `-o` options say (see [`create::Params`]).
#[cfg(feature = "std")]
pub(crate) fn create_output(
    path: &std::path::Path,
    size: u64,
    opts: &crate::CreateOptions,
) -> Result<crate::image::Output> {
    use alloc::boxed::Box;
    use alloc::sync::Arc;

    let params = create::Params::from_options(opts)?;
    if params.subformat == create::Subformat::StreamOptimized {
        let s = Arc::new(stream_write::StreamWriter::create(path, size, &params)?);
        return Ok(crate::image::Output::finished_by(
            Box::new(Arc::clone(&s)),
            s,
        ));
    }
    Ok(crate::image::Output::plain(Box::new(write::create_image(
        path, size, &params,
    )?)))
}

/// Refuses a disk opened without the parent its descriptor names, or with
/// a parent it does not name (reader and writer alike).
pub(crate) fn check_parent(descriptor: &Descriptor, has_backing: bool) -> Result<()> {
    match (&descriptor.parent_file_name_hint, has_backing) {
        (Some(name), false) => Err(Error::invalid_input(format!(
            "vmdk disk has parent '{name}': open it with its parent"
        ))),
        (None, true) => Err(Error::invalid_input(
            "vmdk disk names no parent, but a parent was given",
        )),
        _ => Ok(()),
    }
}
