//! What `vdisk check` reports about a container's own metadata.

use alloc::string::String;
use alloc::vec::Vec;

/// Messages kept in a report; the counts go on past it.
pub const MAX_MESSAGES: usize = 1000;

/// The findings of a container check: errors (metadata that contradicts
/// itself or the file: a table entry past the end, a bad checksum, a
/// refcount too low) and leaks (space allocated in the file that nothing
/// uses: harmless, reclaimable).
///
/// ```
/// use vdisk_format::CheckReport;
/// let mut report = CheckReport::default();
/// assert!(report.is_clean());
/// report.error(format!("grain table 3 at offset {:#x} points past end of file", 0x20000));
/// report.leaks(2, "2 clusters allocated but not referenced");
/// assert_eq!((report.errors, report.leaks), (1, 2));
/// assert!(!report.is_clean());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Number of corruptions found.
    pub errors: u64,
    /// Number of leaked units (clusters, grains, blocks) found.
    pub leaks: u64,
    /// One line per finding, the first [`MAX_MESSAGES`] of them, each
    /// naming the structure and its byte offset.
    pub messages: Vec<String>,
}

impl CheckReport {
    /// Records one corruption.
    pub fn error(&mut self, message: impl Into<String>) {
        self.errors = self.errors.saturating_add(1);
        self.note(message.into());
    }

    /// Records `count` leaked units described by one message.
    pub fn leaks(&mut self, count: u64, message: impl Into<String>) {
        self.leaks = self.leaks.saturating_add(count);
        self.note(message.into());
    }

    /// True when neither errors nor leaks were found.
    pub fn is_clean(&self) -> bool {
        self.errors == 0 && self.leaks == 0
    }

    fn note(&mut self, message: String) {
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(message);
        }
    }
}
