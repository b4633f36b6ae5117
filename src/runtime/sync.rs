//! Atomics and cells used by media-core's own cross-thread protocols.
//!
//! Under `--cfg loom` these resolve to loom's instrumented types so the models in
//! `loom-tests/` exercise the very code the lanes run; otherwise they are `std`'s.

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(loom)]
pub use loom::sync::Arc;

#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub use std::sync::Arc;

/// A spin-wait hint; under loom a yield, so a model's spinning reader lets the writer on.
#[inline]
pub fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// An `UnsafeCell` with a closure API that loom can instrument.
#[derive(Debug)]
pub struct Cell<T>(
    #[cfg(loom)] loom::cell::UnsafeCell<T>,
    #[cfg(not(loom))] std::cell::UnsafeCell<T>,
);

impl<T> Cell<T> {
    /// Wraps a value.
    pub fn new(v: T) -> Self {
        #[cfg(loom)]
        {
            Cell(loom::cell::UnsafeCell::new(v))
        }
        #[cfg(not(loom))]
        {
            Cell(std::cell::UnsafeCell::new(v))
        }
    }

    /// Shared access.
    ///
    /// # Safety
    /// No `with_mut` on this cell may run concurrently.
    pub unsafe fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        #[cfg(loom)]
        {
            // SAFETY: forwarded from the caller's contract.
            self.0.with(|p| f(unsafe { &*p }))
        }
        #[cfg(not(loom))]
        {
            // SAFETY: forwarded from the caller's contract.
            f(unsafe { &*self.0.get() })
        }
    }

    /// Exclusive access.
    ///
    /// # Safety
    /// No other access to this cell may run concurrently.
    pub unsafe fn with_mut<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        #[cfg(loom)]
        {
            // SAFETY: forwarded from the caller's contract.
            self.0.with_mut(|p| f(unsafe { &mut *p }))
        }
        #[cfg(not(loom))]
        {
            // SAFETY: forwarded from the caller's contract.
            f(unsafe { &mut *self.0.get() })
        }
    }
}
