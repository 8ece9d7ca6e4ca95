//! Interior mutability for writable in-memory state: a `RwLock` with `std`
//! (so the disk is `Sync`), a `RefCell` without it.

use crate::Result;
#[cfg(not(feature = "std"))]
use crate::{Error, ErrorKind};

#[cfg(feature = "std")]
pub(crate) struct Lock<T>(std::sync::RwLock<T>);

#[cfg(feature = "std")]
impl<T> Lock<T> {
    pub(crate) fn new(value: T) -> Self {
        Lock(std::sync::RwLock::new(value))
    }

    pub(crate) fn with_read<R>(&self, f: impl FnOnce(&T) -> Result<R>) -> Result<R> {
        let guard = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&guard)
    }

    pub(crate) fn with_write<R>(&self, f: impl FnOnce(&mut T) -> Result<R>) -> Result<R> {
        let mut guard = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    pub(crate) fn into_inner(self) -> T {
        self.0
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(not(feature = "std"))]
pub(crate) struct Lock<T>(core::cell::RefCell<T>);

#[cfg(not(feature = "std"))]
impl<T> Lock<T> {
    pub(crate) fn new(value: T) -> Self {
        Lock(core::cell::RefCell::new(value))
    }

    pub(crate) fn with_read<R>(&self, f: impl FnOnce(&T) -> Result<R>) -> Result<R> {
        let guard = self.0.try_borrow().map_err(|_| busy())?;
        f(&guard)
    }

    pub(crate) fn with_write<R>(&self, f: impl FnOnce(&mut T) -> Result<R>) -> Result<R> {
        let mut guard = self.0.try_borrow_mut().map_err(|_| busy())?;
        f(&mut guard)
    }

    pub(crate) fn into_inner(self) -> T {
        self.0.into_inner()
    }
}

#[cfg(not(feature = "std"))]
fn busy() -> Error {
    Error::new(ErrorKind::Io, "memory disk re-entered while in use")
}
