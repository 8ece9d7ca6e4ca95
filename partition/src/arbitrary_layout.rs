//! Random valid layouts (feature `arbitrary`), shared by the round-trip
//! property test and the `partition_roundtrip` fuzz target.

use alloc::string::String;
use alloc::vec::Vec;

use arbitrary::{Arbitrary, Unstructured};

use crate::{GptAttributes, Guid, Layout, PartitionSpec, PartitionType, TableType};

/// A valid random layout and the disk size it fits, built by placing
/// partitions one after another (with logical partitions in an extended
/// one for MBR), for property tests and the round-trip fuzz target.
#[derive(Debug)]
pub struct RandomLayout(pub Layout, pub u64);

impl<'a> Arbitrary<'a> for RandomLayout {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let gpt = u.arbitrary::<bool>()?;
        let sector_size = if gpt && u.arbitrary::<bool>()? {
            4096
        } else {
            512
        };
        let ss = u64::from(sector_size);
        let disk_size = u.int_in_range(256u64..=4096)? * 64 * ss;
        let mut layout = Layout::new(
            if gpt { TableType::Gpt } else { TableType::Mbr },
            sector_size,
        );
        layout.disk_signature = u.arbitrary()?;
        layout.disk_guid = Guid::from_bytes(u.arbitrary()?);
        layout.gpt_entries = *u.choose(&[4, 8, 32, 128, 129])?;
        let mut next = layout.first_usable() + u.int_in_range(0..=64)?;
        let end = layout.usable_end(disk_size / ss);
        let count = u.int_in_range(0..=if gpt { layout.gpt_entries.min(12) } else { 4 })?;
        let mut numbers: Vec<u32> = (1..=if gpt { layout.gpt_entries } else { 4 }).collect();
        for _ in 0..count {
            let sectors = u.int_in_range(1..=200)?;
            if next + sectors > end || numbers.is_empty() {
                break;
            }
            let number = numbers.remove(u.choose_index(numbers.len())?);
            let kind = if gpt {
                PartitionType::Gpt(Guid::from_bytes([u.int_in_range(1..=255)?; 16]))
            } else {
                PartitionType::Mbr(*u.choose(&[0x07, 0x0c, 0x83, 0x82, 0xfd])?)
            };
            let mut name = String::new();
            for _ in 0..u.int_in_range(0..=20)? {
                let c = *u.choose(&['a', 'Z', '0', ' ', 'é', '☃', '𝄞'])?;
                // GPT names hold 36 UTF-16 units; a character may take two.
                if name.encode_utf16().count() + c.len_utf16() > 36 {
                    break;
                }
                name.push(c);
            }
            layout.partitions.push(PartitionSpec {
                name: if gpt { name } else { String::new() },
                guid: if gpt {
                    Guid::from_bytes(u.arbitrary()?)
                } else {
                    Guid::ZERO
                },
                attributes: if gpt {
                    GptAttributes::from_bits_retain(u.arbitrary()?)
                } else {
                    GptAttributes::empty()
                },
                bootable: !gpt && u.arbitrary()?,
                ..PartitionSpec::new(number, next, sectors, kind)
            });
            next += sectors + u.int_in_range(0..=50)?;
        }
        // Logical partitions inside an extended one in a free MBR slot.
        if !gpt && layout.partitions.len() < 4 && u.arbitrary::<bool>()? {
            let slot = (1..=4)
                .find(|n| !layout.partitions.iter().any(|p| p.number == *n))
                .unwrap_or(4);
            let ext_first = next;
            let mut at = ext_first + 1;
            let mut logical = Vec::new();
            for i in 0..u.int_in_range(0..=6)? {
                let sectors = u.int_in_range(1..=100)?;
                if at + sectors + 2 > end {
                    break;
                }
                logical.push(PartitionSpec::new(
                    5 + i,
                    at,
                    sectors,
                    PartitionType::Mbr(0x83),
                ));
                at += sectors + u.int_in_range(1..=40)?;
            }
            if ext_first + 1 < end {
                let ext_end = logical
                    .last()
                    .map_or(ext_first + 1, PartitionSpec::end_lba)
                    .max(ext_first + 1);
                layout.partitions.push(PartitionSpec::new(
                    slot,
                    ext_first,
                    ext_end - ext_first,
                    PartitionType::Mbr(0x0f),
                ));
                layout.partitions.extend(logical);
            }
        }
        layout.partitions.sort_by_key(|p| p.number);
        Ok(RandomLayout(layout, disk_size))
    }
}

/// Writes a random layout to a memory disk, reads it back and checks that
/// the same layout comes out. Panics (for the fuzzer) when it does not.
#[cfg(feature = "std")]
// A test oracle: panicking on a mismatch is how it reports one to the fuzzer.
#[allow(clippy::panic)]
pub fn round_trip(data: &[u8]) {
    let Ok(RandomLayout(layout, size)) = RandomLayout::arbitrary(&mut Unstructured::new(data))
    else {
        return;
    };
    let disk = disk_io::MemDisk::new(size as usize);
    if let Err(e) = crate::write::write(&disk, &layout) {
        panic!("a valid layout was refused: {e}: {layout:?}");
    }
    let table = match crate::read(&disk) {
        Ok(Some(t)) => t,
        other => panic!("written table not read back: {other:?}"),
    };
    let mut back = Layout::from_table(&table);
    if layout.boot_code.is_none() {
        back.boot_code = None;
    }
    match layout.table {
        TableType::Mbr => {
            back.disk_guid = layout.disk_guid;
            back.gpt_entries = layout.gpt_entries;
        }
        TableType::Gpt => back.disk_signature = layout.disk_signature,
    }
    assert_eq!(back, layout);
    assert!(table.warnings().is_empty(), "{:?}", table.warnings());
}
