//! Names of common partition types.

use crate::Guid;

/// Well-known GPT partition type GUIDs and their names.
pub const GPT_TYPES: &[(Guid, &str)] = &[
    (
        Guid::from_fields(
            0xc12a_7328,
            0xf81f,
            0x11d2,
            [0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b],
        ),
        "EFI System",
    ),
    (
        Guid::from_fields(
            0x2168_6148,
            0x6449,
            0x6e6f,
            [0x74, 0x4e, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49],
        ),
        "BIOS boot",
    ),
    (
        Guid::from_fields(
            0xe3c9_e316,
            0x0b5c,
            0x4db8,
            [0x81, 0x7d, 0xf9, 0x2d, 0xf0, 0x02, 0x15, 0xae],
        ),
        "Microsoft reserved",
    ),
    (
        Guid::from_fields(
            0xebd0_a0a2,
            0xb9e5,
            0x4433,
            [0x87, 0xc0, 0x68, 0xb6, 0xb7, 0x26, 0x99, 0xc7],
        ),
        "Microsoft basic data",
    ),
    (
        Guid::from_fields(
            0xde94_bba4,
            0x06d1,
            0x4d40,
            [0xa1, 0x6a, 0xbf, 0xd5, 0x01, 0x79, 0xd6, 0xac],
        ),
        "Windows recovery environment",
    ),
    (
        Guid::from_fields(
            0x5808_c8aa,
            0x7e8f,
            0x42e0,
            [0x85, 0xd2, 0xe1, 0xe9, 0x04, 0x34, 0xcf, 0xb3],
        ),
        "Microsoft LDM metadata",
    ),
    (
        Guid::from_fields(
            0xaf9b_60a0,
            0x1431,
            0x4f62,
            [0xbc, 0x68, 0x33, 0x11, 0x71, 0x4a, 0x69, 0xad],
        ),
        "Microsoft LDM data",
    ),
    (
        Guid::from_fields(
            0x0fc6_3daf,
            0x8483,
            0x4772,
            [0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4],
        ),
        "Linux filesystem",
    ),
    (
        Guid::from_fields(
            0x0657_fd6d,
            0xa4ab,
            0x43c4,
            [0x84, 0xe5, 0x09, 0x33, 0xc8, 0x4b, 0x4f, 0x4f],
        ),
        "Linux swap",
    ),
    (
        Guid::from_fields(
            0xe6d6_d379,
            0xf507,
            0x44c2,
            [0xa2, 0x3c, 0x23, 0x8f, 0x2a, 0x3d, 0xf9, 0x28],
        ),
        "Linux LVM",
    ),
    (
        Guid::from_fields(
            0xa19d_880f,
            0x05fc,
            0x4d3b,
            [0xa0, 0x06, 0x74, 0x3f, 0x0f, 0x84, 0x91, 0x1e],
        ),
        "Linux RAID",
    ),
    (
        Guid::from_fields(
            0x4f68_bce3,
            0xe8cd,
            0x4db1,
            [0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84, 0xb7, 0x09],
        ),
        "Linux root (x86-64)",
    ),
    (
        Guid::from_fields(
            0x933a_c7e1,
            0x2eb4,
            0x4f13,
            [0xb8, 0x44, 0x0e, 0x14, 0xe2, 0xae, 0xf9, 0x15],
        ),
        "Linux home",
    ),
    (
        Guid::from_fields(
            0xbc13_c2ff,
            0x59e6,
            0x4262,
            [0xa3, 0x52, 0xb2, 0x75, 0xfd, 0x6f, 0x71, 0x72],
        ),
        "Linux extended boot",
    ),
    (
        Guid::from_fields(
            0x4846_5300,
            0x0000,
            0x11aa,
            [0xaa, 0x11, 0x00, 0x30, 0x65, 0x43, 0xec, 0xac],
        ),
        "Apple HFS/HFS+",
    ),
    (
        Guid::from_fields(
            0x7c34_57ef,
            0x0000,
            0x11aa,
            [0xaa, 0x11, 0x00, 0x30, 0x65, 0x43, 0xec, 0xac],
        ),
        "Apple APFS",
    ),
    (
        Guid::from_fields(
            0x516e_7cb6,
            0x6ecf,
            0x11d6,
            [0x8f, 0xf8, 0x00, 0x02, 0x2d, 0x09, 0x71, 0x2b],
        ),
        "FreeBSD UFS",
    ),
];

/// The name of a GPT type GUID, if it is a common one.
///
/// ```
/// use partition::{gpt_type_name, Guid};
/// let esp = Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
/// assert_eq!(gpt_type_name(&esp), Some("EFI System"));
/// ```
pub fn gpt_type_name(guid: &Guid) -> Option<&'static str> {
    GPT_TYPES.iter().find(|(g, _)| g == guid).map(|(_, n)| *n)
}

/// The name of an MBR partition type byte, if it is a common one.
pub fn mbr_type_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        0x01 => "FAT12",
        0x04 => "FAT16 <32M",
        0x05 => "Extended",
        0x06 => "FAT16",
        0x07 => "HPFS/NTFS/exFAT",
        0x0b => "W95 FAT32",
        0x0c => "W95 FAT32 (LBA)",
        0x0e => "W95 FAT16 (LBA)",
        0x0f => "W95 Extended (LBA)",
        0x27 => "Hidden NTFS WinRE",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x85 => "Linux extended",
        0x8e => "Linux LVM",
        0xa5 => "FreeBSD",
        0xee => "GPT protective",
        0xef => "EFI (FAT-12/16/32)",
        0xfd => "Linux raid autodetect",
        _ => return None,
    })
}
