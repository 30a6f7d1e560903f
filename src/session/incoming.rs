//! `Session::incoming`: the streams the peer opens, as an iterator.

use super::{Session, Stream};
use crate::error::{Error, Result};
use std::iter::FusedIterator;

impl Session {
    /// An iterator over the streams the peer opens, as [`accept_stream`](Session::accept_stream)
    /// returns them, like `TcpListener::incoming`. It ends
    /// when the session stops taking streams: closed here, closed by the peer, or ended
    /// otherwise ([`close_reason`](Session::close_reason) says why). Other errors are yielded
    /// (there are none today).
    ///
    /// ```no_run
    /// # fn serve(session: mtmux::Session) {
    /// for stream in session.incoming() {
    ///     let stream = stream.expect("accept");
    ///     std::thread::spawn(move || {
    ///         let mut reader = stream.try_clone().expect("clone");
    ///         let mut writer = stream;
    ///         let _ = std::io::copy(&mut reader, &mut writer); // echo
    ///     });
    /// }
    /// # }
    /// ```
    pub fn incoming(&self) -> IncomingStreams<'_> {
        IncomingStreams { session: self }
    }
}

/// The streams a peer opens: see [`Session::incoming`].
#[derive(Debug)]
pub struct IncomingStreams<'a> {
    session: &'a Session,
}

impl Iterator for IncomingStreams<'_> {
    type Item = Result<Stream>;

    fn next(&mut self) -> Option<Result<Stream>> {
        match self.session.accept_stream() {
            Err(Error::SessionClosed(_)) => None,
            r => Some(r),
        }
    }
}

/// Once the session is closed, every later `accept_stream` fails the same way.
impl FusedIterator for IncomingStreams<'_> {}
