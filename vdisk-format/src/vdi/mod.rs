//! VirtualBox VDI, header versions 1.1 and 0: dynamic, static and
//! differencing images, read through the block map.
//!
//! A differencing image names its parent by UUID only (`uuid_link`, the
//! parent's `uuid_create`); [`Vdi::with_parent`] takes the parent disk
//! from the caller, and `Image::open` finds it among the VDI files of the
//! child's directory. Blocks the block map marks free read from the
//! parent (differencing images) or as zeros; blocks marked zero read as
//! zeros.

pub mod block_map;
pub mod header;
#[cfg(feature = "std")]
pub mod write;

use alloc::format;

use disk_io::{Allocation, Error, Extent, ReadAt, Result, check_range, clamp_query};

pub use block_map::{Block, BlockMap};
pub use header::{Header, ImageType, Uuid};

use crate::CheckReport;
use crate::chain::{Backing, extend_run, layer_answer, read_parent};

/// A VDI image read from `D`.
///
/// ```no_run
/// use disk_io::{FileDisk, ReadAt};
/// let image = vdisk_format::vdi::Vdi::open(FileDisk::open("disk.vdi")?)?;
/// let mut mbr = [0u8; 512];
/// image.read_at(0, &mut mbr)?;
/// # Ok::<(), disk_io::Error>(())
/// ```
pub struct Vdi<D> {
    file: D,
    header: Header,
    map: BlockMap,
    parent: Option<Backing>,
}

impl<D: ReadAt> Vdi<D> {
    /// Opens the dynamic or static VDI image stored in `file`.
    pub fn open(file: D) -> Result<Self> {
        Vdi::with_parent(file, None)
    }

    /// Opens the VDI image stored in `file`; `parent` must be given
    /// exactly when it is a differencing image.
    pub fn with_parent(file: D, parent: Option<Backing>) -> Result<Self> {
        let header = Header::read(&file)?;
        match (header.image_type, &parent) {
            (ImageType::Differencing, None) => {
                return Err(Error::invalid_input(format!(
                    "vdi differencing image (parent {}): open it with its parent",
                    header.uuid_link
                ))
                .at(header.link_offset()));
            }
            (ImageType::Dynamic | ImageType::Static, Some(_)) => {
                return Err(Error::invalid_input(
                    "vdi image is not a differencing image, but a parent was given",
                ));
            }
            _ => {}
        }
        let map = BlockMap::read(&file, &header)?;
        Ok(Vdi {
            file,
            header,
            map,
            parent,
        })
    }

    /// The checked header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The block map.
    pub fn block_map(&self) -> &BlockMap {
        &self.map
    }

    /// The parent disk of a differencing image.
    pub fn parent(&self) -> Option<&Backing> {
        self.parent.as_ref()
    }

    /// The mapping of guest block `index`.
    fn block(&self, index: u64) -> Result<Block> {
        self.map.lookup(&self.header, self.file.size(), index)
    }

    /// The allocation state of a block.
    fn state(&self, block: Block) -> Allocation {
        match block {
            Block::Data(_) => Allocation::Data,
            Block::Zero => Allocation::Zero,
            // Without a parent a free block can only read as zeros (qemu
            // says so too); in a differencing image it is the parent's.
            Block::Free if self.parent.is_none() => Allocation::Zero,
            Block::Free => Allocation::Unallocated,
        }
    }

    /// Reads file bytes at `host`; a block cut off by the end of the file
    /// reads as zeros past it.
    fn read_host(&self, host: u64, buf: &mut [u8]) -> Result<()> {
        let available = self.file.size().saturating_sub(host).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(available);
        self.file.read_at(host, head)?;
        tail.fill(0);
        Ok(())
    }
}

impl<D: ReadAt> ReadAt for Vdi<D> {
    fn size(&self) -> u64 {
        self.header.disk_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.header.disk_size, offset, buf.len() as u64)?;
        let bs = u64::from(self.header.block_size);
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = pos / bs;
            let within = pos % bs;
            let mut n = (bs - within).min((buf.len() - done) as u64) as usize;
            match self.block(index)? {
                Block::Zero => buf.get_mut(done..done + n).unwrap_or(&mut []).fill(0),
                Block::Free if self.parent.is_none() => {
                    buf.get_mut(done..done + n).unwrap_or(&mut []).fill(0);
                }
                Block::Free => read_parent(
                    self.parent.as_ref(),
                    pos,
                    buf.get_mut(done..done + n).unwrap_or(&mut []),
                )?,
                Block::Data(data) => {
                    let host = data + within;
                    // Coalesce blocks that follow each other in the file.
                    let mut next = index + 1;
                    while done + n < buf.len() {
                        match self.block(next)? {
                            Block::Data(h) if h == host + n as u64 => {
                                n += bs.min((buf.len() - done - n) as u64) as usize;
                                next += 1;
                            }
                            _ => break,
                        }
                    }
                    self.read_host(host, buf.get_mut(done..done + n).unwrap_or(&mut []))?;
                }
            }
            done += n;
        }
        Ok(())
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        let length = clamp_query(self.header.disk_size, offset, length)?;
        let end = offset + length;
        let bs = u64::from(self.header.block_size);
        let index = offset / bs;
        let state = self.state(self.block(index)?);
        let stop = extend_run(((index + 1) * bs).min(end), end, state, |pos| {
            let index = pos / bs;
            Ok(Some((self.state(self.block(index)?), (index + 1) * bs)))
        })?;
        layer_answer(self.parent.as_ref(), offset, stop, state)
    }
}

/// Checks the VDI image in `file`: its block map against the header and
/// the file (see [`BlockMap::check`]). An error means the header or the
/// block map could not be read at all.
pub fn check<D: ReadAt + ?Sized>(file: &D) -> Result<CheckReport> {
    let header = Header::read(file)?;
    let map = BlockMap::read(file, &header)?;
    let mut report = CheckReport::default();
    map.check(&header, file.size(), &mut report);
    Ok(report)
}

/// Opens a VDI image file for `Image`: a differencing image's parent is
/// the VDI file of the same directory whose `uuid_create` is the child's
/// `uuid_link`, opened under the caller's policy; a parent modified since
/// (its `uuid_modify` differs from the child's `uuid_parent_modify`) is
/// damage.
#[cfg(feature = "std")]
pub(crate) fn open_layer(
    file: alloc::sync::Arc<disk_io::FileDisk>,
    ctx: &mut crate::image::OpenContext<'_>,
) -> Result<crate::image::Layer> {
    use alloc::boxed::Box;
    let header = Header::read(&*file)?;
    let parent = if header.image_type == ImageType::Differencing {
        Some(open_parent(&header, ctx)?)
    } else {
        None
    };
    let subformat = Some(header.image_type.name().into());
    let cluster_size = Some(u64::from(header.block_size));
    let vdi = Vdi::with_parent(file, parent)?;
    Ok(crate::image::Layer {
        guest: Box::new(vdi),
        subformat,
        cluster_size,
        extra_allocated: 0,
    })
}

/// Most directory entries looked at when searching for a parent.
#[cfg(feature = "std")]
const MAX_NEIGHBOURS: usize = 4096;

#[cfg(feature = "std")]
fn open_parent(header: &Header, ctx: &mut crate::image::OpenContext<'_>) -> Result<Backing> {
    use std::io::Read;
    let link = header.uuid_link;
    if link.is_nil() {
        return Err(Error::corrupt(
            "vdi differencing image without a parent UUID (uuid_link is nil)",
            header.link_offset(),
        ));
    }
    let child = ctx.path().to_path_buf();
    let dir = match child.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut names: alloc::vec::Vec<(alloc::string::String, Uuid)> = alloc::vec::Vec::new();
    for entry in std::fs::read_dir(&dir)?.take(MAX_NEIGHBOURS) {
        let Ok(entry) = entry else { continue };
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if Some(entry.file_name().as_os_str()) == child.file_name() {
            continue;
        }
        // Regular files only (opening a FIFO would block), big enough to
        // hold a header.
        let regular = std::fs::metadata(entry.path())
            .is_ok_and(|m| m.is_file() && m.len() >= header::HEADER_LEN as u64);
        if !regular {
            continue;
        }
        let mut head = [0u8; header::HEADER_LEN];
        let read = std::fs::File::open(entry.path()).and_then(|mut f| f.read_exact(&mut head));
        if read.is_err() {
            continue;
        }
        if let Some((create, modify)) = header::identity(&head) {
            if create == link {
                names.push((name, modify));
            }
        }
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let Some((name, modify)) = names.into_iter().next() else {
        return Err(Error::invalid_input(format!(
            "vdi differencing image: no VDI file in {} has the parent UUID {link}",
            dir.display()
        ))
        .at(header.link_offset()));
    };
    let path = ctx.resolve(&name, "vdi parent image")?;
    if !header.uuid_parent_modify.is_nil() && header.uuid_parent_modify != modify {
        ctx.damaged(
            Error::corrupt(
                format!(
                    "vdi parent {name} was modified after this differencing image was made: its uuid_modify is {modify}, the child recorded {}",
                    header.uuid_parent_modify
                ),
                header.parent_modify_offset(),
            ),
        )?;
    }
    Ok(ctx
        .open_parent_at(&path, &name, Some(crate::Format::Vdi))?
        .into_guest())
}
