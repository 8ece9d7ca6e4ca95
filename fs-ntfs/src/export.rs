//! Attribute-level export: a file's attributes as a backup copies them —
//! a resident attribute whole, a non-resident one as its attribute record
//! (header and run list) plus, on request, the clusters its runs name.

use alloc::vec::Vec;
use disk_io::bytes::le_u32;
use disk_io::{Error, ReadAt, Result};

use crate::attribute::{Attribute, AttributeFlags, NonResident, Value};
use crate::file::File;
use crate::record::FileRecord;
use crate::run_list::Run;
use crate::volume::NtfsVolume;

/// Largest piece of cluster data handed to an [`NtfsVolume::export_data`]
/// visitor at once.
pub const EXPORT_CHUNK: usize = 1 << 20;

/// One attribute of a file, exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedAttribute {
    /// Type code ([`crate::attribute::types`]).
    pub ty: u32,
    /// Name, UTF-16 (empty for the unnamed attribute).
    pub name: Vec<u16>,
    /// Attribute id inside its record.
    pub id: u16,
    /// Flags (compressed, encrypted, sparse).
    pub flags: AttributeFlags,
    /// The MFT record holding the attribute record (the base record or an
    /// extension record).
    pub record: u64,
    /// Byte offset of the attribute record on the volume.
    pub position: u64,
    /// The attribute record exactly as stored in its FILE record (fixups
    /// applied): the header, the name and the resident value or the run
    /// list. Copying it back into a record restores the attribute.
    pub header: Vec<u8>,
    /// What the attribute holds.
    pub content: Exported,
}

/// The content of an exported attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exported {
    /// A resident attribute: its whole value.
    Resident(Vec<u8>),
    /// A non-resident attribute (one extent of it): sizes and runs. Its
    /// clusters come through [`NtfsVolume::export_data`].
    NonResident(NonResident),
}

impl ExportedAttribute {
    /// True for a resident attribute.
    pub fn is_resident(&self) -> bool {
        matches!(self.content, Exported::Resident(_))
    }

    /// The runs of a non-resident attribute (empty for a resident one).
    pub fn runs(&self) -> &[Run] {
        match &self.content {
            Exported::Resident(_) => &[],
            Exported::NonResident(n) => &n.runs,
        }
    }
}

impl<D: ReadAt> NtfsVolume<D> {
    /// The attributes of `file` in record order — the base record's in the
    /// order they are stored, then those of each extension record (by
    /// record number) that its `$ATTRIBUTE_LIST` names — each with its
    /// attribute record as stored and marked resident or non-resident.
    pub fn export_attributes(&self, file: &File) -> Result<Vec<ExportedAttribute>> {
        let mut out = Vec::with_capacity(file.attributes.len());
        let mut record = None;
        for a in &file.attributes {
            if record
                .as_ref()
                .is_none_or(|r: &FileRecord| r.number != a.record)
            {
                record = Some(self.record(a.record)?);
            }
            let Some(rec) = &record else {
                continue;
            };
            out.push(export_one(a, rec)?);
        }
        Ok(out)
    }

    /// Reads the clusters the runs of `attribute` name, in run order, and
    /// hands them to `visit` with the VCN of their first cluster, at most
    /// [`EXPORT_CHUNK`] bytes at a time. Sparse runs are not visited (the
    /// runs say where they are). The bytes are as stored: compressed
    /// attributes give their compressed clusters, and the last cluster
    /// may hold bytes past the data size.
    pub fn export_data(
        &self,
        attribute: &ExportedAttribute,
        visit: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let cs = u64::from(self.cluster_size());
        let chunk_clusters = (EXPORT_CHUNK as u64 / cs).max(1);
        let mut buf = Vec::new();
        for run in attribute.runs() {
            let Some(lcn) = run.lcn else {
                continue;
            };
            let mut done = 0u64;
            while done < run.length {
                let n = (run.length - done).min(chunk_clusters);
                buf.resize((n * cs) as usize, 0);
                let at = (lcn + done) * cs;
                self.disk().read_at(at, &mut buf).map_err(|e| {
                    e.context(alloc::format!(
                        "clusters of attribute {:#x} in MFT record {} (VCN {})",
                        attribute.ty,
                        attribute.record,
                        run.vcn + done
                    ))
                })?;
                visit(run.vcn + done, &buf)?;
                done += n;
            }
        }
        Ok(())
    }
}

fn export_one(a: &Attribute, record: &FileRecord) -> Result<ExportedAttribute> {
    let at = a
        .position
        .checked_sub(record.position)
        .and_then(|o| usize::try_from(o).ok());
    let length = at.and_then(|o| le_u32(&record.bytes, o + 4));
    let header = at
        .zip(length)
        .and_then(|(o, l)| record.bytes.get(o..o.checked_add(l as usize)?))
        .ok_or_else(|| {
            Error::corrupt(
                alloc::format!(
                    "attribute {:#x} is not inside MFT record {}",
                    a.ty,
                    a.record
                ),
                a.position,
            )
        })?;
    Ok(ExportedAttribute {
        ty: a.ty,
        name: a.name.clone(),
        id: a.id,
        flags: a.flags,
        record: a.record,
        position: a.position,
        header: header.to_vec(),
        content: match &a.value {
            Value::Resident(v) => Exported::Resident(v.clone()),
            Value::NonResident(n) => Exported::NonResident(n.clone()),
        },
    })
}
