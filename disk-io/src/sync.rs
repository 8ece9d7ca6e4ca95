//! Interior mutability for state behind `&self` (memory disks, metadata
//! caches of image formats): a `RwLock` with `std`, so the owner is `Sync`
//! and shared between threads; a `RefCell` without it, for one thread.
//!
//! ```
//! use disk_io::sync::Lock;
//! let cache = Lock::new(Vec::<u64>::new());
//! cache.with_write(|c| { c.push(7); Ok(()) })?;
//! assert_eq!(cache.with_read(|c| Ok(c[0]))?, 7);
//! # Ok::<(), disk_io::Error>(())
//! ```

use crate::Result;
#[cfg(not(feature = "std"))]
use crate::{Error, ErrorKind};

/// A lock around `T`; closures get shared or exclusive access.
#[cfg(feature = "std")]
pub struct Lock<T>(std::sync::RwLock<T>);

#[cfg(feature = "std")]
impl<T> Lock<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Lock(std::sync::RwLock::new(value))
    }

    /// Runs `f` with shared access.
    pub fn with_read<R>(&self, f: impl FnOnce(&T) -> Result<R>) -> Result<R> {
        let guard = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&guard)
    }

    /// Runs `f` with exclusive access.
    pub fn with_write<R>(&self, f: impl FnOnce(&mut T) -> Result<R>) -> Result<R> {
        let mut guard = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Gives the value back.
    pub fn into_inner(self) -> T {
        self.0
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A lock around `T`; closures get shared or exclusive access.
#[cfg(not(feature = "std"))]
pub struct Lock<T>(core::cell::RefCell<T>);

#[cfg(not(feature = "std"))]
impl<T> Lock<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Lock(core::cell::RefCell::new(value))
    }

    /// Runs `f` with shared access.
    pub fn with_read<R>(&self, f: impl FnOnce(&T) -> Result<R>) -> Result<R> {
        let guard = self.0.try_borrow().map_err(|_| busy())?;
        f(&guard)
    }

    /// Runs `f` with exclusive access.
    pub fn with_write<R>(&self, f: impl FnOnce(&mut T) -> Result<R>) -> Result<R> {
        let mut guard = self.0.try_borrow_mut().map_err(|_| busy())?;
        f(&mut guard)
    }

    /// Gives the value back.
    pub fn into_inner(self) -> T {
        self.0.into_inner()
    }
}

#[cfg(not(feature = "std"))]
fn busy() -> Error {
    Error::new(ErrorKind::Io, "memory disk re-entered while in use")
}
