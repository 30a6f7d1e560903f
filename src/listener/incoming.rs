//! `Listener::incoming`: the sessions clients open, as an iterator.

use super::Listener;
use crate::error::{Error, Result};
use crate::session::Session;
use std::iter::FusedIterator;

impl Listener {
    /// An iterator over the sessions clients open (one per complete bundle), as
    /// [`accept`](Listener::accept) returns them, like `TcpListener::incoming`. It ends when
    /// the listener is closed ([`close`](Listener::close), also from another thread); other
    /// errors are yielded (there are none today).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), mtmux::Error> {
    /// let listener = mtmux::Listener::bind("127.0.0.1:7000", &mtmux::Config::default())?;
    /// for session in listener.incoming() {
    ///     let session = session?;
    ///     std::thread::spawn(move || {
    ///         for stream in session.incoming() {
    ///             // ...
    /// #           drop(stream);
    ///         }
    ///     });
    /// }
    /// # Ok(()) }
    /// ```
    pub fn incoming(&self) -> IncomingSessions<'_> {
        IncomingSessions { listener: self }
    }
}

/// The sessions clients open: see [`Listener::incoming`].
#[derive(Debug)]
pub struct IncomingSessions<'a> {
    listener: &'a Listener,
}

impl Iterator for IncomingSessions<'_> {
    type Item = Result<Session>;

    fn next(&mut self) -> Option<Result<Session>> {
        // A closed listener reports itself as a closed session.
        match self.listener.accept() {
            Err(Error::SessionClosed(_)) => None,
            r => Some(r),
        }
    }
}

/// Once the listener is closed, every later `accept` fails the same way.
impl FusedIterator for IncomingSessions<'_> {}
