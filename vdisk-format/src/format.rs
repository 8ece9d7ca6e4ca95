//! Format names.

use core::fmt;
use core::str::FromStr;

use disk_io::Error;

/// A container format, named as qemu-img names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// The guest disk byte for byte, nothing around it.
    Raw,
    /// VMware virtual disk.
    Vmdk,
    /// QEMU copy-on-write, version 2 and 3.
    Qcow2,
    /// Microsoft Virtual Hard Disk (qemu's `vpc`).
    Vhd,
    /// Microsoft Virtual Hard Disk v2.
    Vhdx,
    /// VirtualBox disk image.
    Vdi,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 6] = [
        Format::Raw,
        Format::Vmdk,
        Format::Qcow2,
        Format::Vhd,
        Format::Vhdx,
        Format::Vdi,
    ];

    /// The name qemu-img uses (`vhd` for VHD; `vpc` is accepted when parsing).
    pub const fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Vmdk => "vmdk",
            Format::Qcow2 => "qcow2",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Error;

    /// Parses a format name; `vpc` is an alias of `vhd`.
    ///
    /// ```
    /// use vdisk_format::Format;
    /// assert_eq!("vpc".parse::<Format>().unwrap(), Format::Vhd);
    /// assert!("qcow3".parse::<Format>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.eq_ignore_ascii_case("vpc") {
            return Ok(Format::Vhd);
        }
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::invalid_input(alloc::format!(
                    "unknown format '{s}' (expected raw, vmdk, qcow2, vhd, vhdx or vdi)"
                ))
            })
    }
}
