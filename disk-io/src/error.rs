//! The one error type of the I/O layer.

use alloc::borrow::Cow;
use core::fmt;

/// What went wrong, by what the caller can do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The operating system or the device underneath failed.
    Io,
    /// An access reached outside the bounds of a disk or a structure.
    OutOfRange,
    /// The bytes contradict the format they claim to be.
    Corrupt,
    /// The input is valid but uses something this code does not handle.
    Unsupported,
    /// The caller asked for something that cannot be done (bad argument).
    InvalidInput,
    /// A write to something that was opened read-only.
    ReadOnly,
    /// The operation was cancelled by the caller.
    Cancelled,
}

impl ErrorKind {
    /// A short lowercase name, used in messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Io => "I/O error",
            ErrorKind::OutOfRange => "out of range",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::ReadOnly => "read-only",
            ErrorKind::Cancelled => "cancelled",
        }
    }
}

/// An error with a kind, a message naming the structure involved and, when
/// known, the byte offset where it happened.
///
/// ```
/// use disk_io::{Error, ErrorKind};
/// let e = Error::corrupt("MBR boot signature", 0x1fe);
/// assert_eq!(e.kind(), ErrorKind::Corrupt);
/// assert_eq!(e.offset(), Some(0x1fe));
/// assert_eq!(e.to_string(), "corrupt MBR boot signature at offset 0x1fe");
/// ```
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    offset: Option<u64>,
    message: Cow<'static, str>,
    #[cfg(feature = "std")]
    source: Option<std::io::Error>,
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// A new error of `kind` described by `message` (which names the structure or operation).
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            offset: None,
            message: message.into(),
            #[cfg(feature = "std")]
            source: None,
        }
    }

    /// Attaches the byte offset where the error happened.
    #[must_use]
    pub fn at(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// A corrupt structure (`what` names it, e.g. "qcow2 header magic") at `offset`.
    pub fn corrupt(what: impl Into<Cow<'static, str>>, offset: u64) -> Self {
        Error::new(ErrorKind::Corrupt, what).at(offset)
    }

    /// A valid feature this code does not handle.
    pub fn unsupported(what: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Unsupported, what)
    }

    /// A bad argument from the caller.
    pub fn invalid_input(what: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::InvalidInput, what)
    }

    /// An access of `length` bytes at `offset` on something of `size` bytes.
    pub fn out_of_range(offset: u64, length: u64, size: u64) -> Self {
        Error::new(
            ErrorKind::OutOfRange,
            alloc::format!("access of {length} bytes past the end of a {size}-byte disk"),
        )
        .at(offset)
    }

    /// An operating-system error at `offset`.
    #[cfg(feature = "std")]
    pub fn io(source: std::io::Error, offset: Option<u64>) -> Self {
        Error {
            kind: ErrorKind::Io,
            offset,
            message: Cow::Borrowed(""),
            source: Some(source),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The byte offset involved, when known.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The message naming the structure or operation, without kind or offset.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with an outer context, e.g. the structure that
    /// was being read when a lower layer failed.
    #[must_use]
    pub fn context(mut self, outer: impl fmt::Display) -> Self {
        self.message = if self.message.is_empty() {
            Cow::Owned(alloc::format!("{outer}"))
        } else {
            Cow::Owned(alloc::format!("{outer}: {}", self.message))
        };
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            // "corrupt X", "unsupported X": the kind reads as an adjective.
            ErrorKind::Corrupt | ErrorKind::Unsupported => {
                write!(f, "{} {}", self.kind.as_str(), self.message)?
            }
            ErrorKind::Io => {
                f.write_str(&self.message)?;
                #[cfg(feature = "std")]
                if let Some(source) = &self.source {
                    if !self.message.is_empty() {
                        f.write_str(": ")?;
                    }
                    write!(f, "{source}")?;
                }
            }
            _ => f.write_str(&self.message)?,
        }
        if let Some(offset) = self.offset {
            write!(f, " at offset {offset:#x}")?;
        }
        Ok(())
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        #[cfg(feature = "std")]
        if let Some(source) = &self.source {
            return Some(source);
        }
        None
    }
}

#[cfg(feature = "std")]
impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::io(source, None)
    }
}

#[cfg(feature = "std")]
impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        let kind = match e.kind {
            ErrorKind::Io => match &e.source {
                Some(s) => s.kind(),
                None => std::io::ErrorKind::Other,
            },
            ErrorKind::OutOfRange => std::io::ErrorKind::UnexpectedEof,
            ErrorKind::Corrupt => std::io::ErrorKind::InvalidData,
            ErrorKind::Unsupported => std::io::ErrorKind::Unsupported,
            ErrorKind::InvalidInput => std::io::ErrorKind::InvalidInput,
            ErrorKind::ReadOnly => std::io::ErrorKind::PermissionDenied,
            ErrorKind::Cancelled => std::io::ErrorKind::Interrupted,
        };
        std::io::Error::new(kind, e)
    }
}
