//! mtlsgate: when a connection gives its buffers back.
//!
//! A connection keeps its read and write buffers between frames, as h2 does, so that a
//! busy connection takes no new buffer per request. A poll made inside
//! [`release_buffers`] gives them back instead: the write buffer once everything is
//! written, the read buffer once no bytes are pending (the next bytes are then read into
//! the stack first). The server calls it when a connection has been quiet for a while, so
//! that an idle connection holds no buffer.

use std::cell::Cell;

thread_local! {
    static RELEASING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, typically one poll of a connection, with buffer release on: a connection
/// polled inside it gives back the buffers it does not need now.
pub fn release_buffers<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            RELEASING.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(RELEASING.with(|r| r.replace(true)));
    f()
}

/// Whether the poll under way is inside [`release_buffers`].
pub(crate) fn releasing() -> bool {
    RELEASING.with(Cell::get)
}
