//! The peers: each multiplexer over ONE loopback TCP connection (TCP_NODELAY, as mtmux's
//! tunnels), both ends in this process, default configuration, driven the way its
//! documentation shows. Each is reduced to an [`Opener`] (client side) and an [`Acceptor`]
//! (server side) of boxed tokio streams, so that the workloads are written once.

use futures::future::{self, BoxFuture, FutureExt};
use futures::StreamExt;
use std::io;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

/// A byte stream of any peer, as tokio sees it.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// A boxed stream of a peer.
pub type BoxConn = Box<dyn Conn>;

/// Opens streams on the client end of a session.
pub trait Opener: Send {
    /// A new outbound stream.
    fn open(&mut self) -> BoxFuture<'_, io::Result<BoxConn>>;
}

/// Accepts the streams the client end opened.
pub trait Acceptor: Send {
    /// The next inbound stream.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<BoxConn>>;
}

/// The peers, as named on the command line: (name, crate version from Cargo.lock).
pub const PEERS: [(&str, &str); 4] = [
    ("yamux", env!("PEER_VERSION_YAMUX")),
    ("tokio-yamux", env!("PEER_VERSION_TOKIO_YAMUX")),
    ("async_smux", env!("PEER_VERSION_ASYNC_SMUX")),
    ("smux", env!("PEER_VERSION_SMUX")),
];

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// One TCP connection over loopback: (client end, server end).
async fn tcp_pair() -> io::Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let (c, s) = tokio::join!(TcpStream::connect(l.local_addr()?), l.accept());
    let (c, s) = (c?, s?.0);
    c.set_nodelay(true)?;
    s.set_nodelay(true)?;
    Ok((c, s))
}

/// A connected session of `peer` over one loopback TCP connection. Must run inside the
/// runtime: the drivers are spawned tasks.
pub async fn session(peer: &str) -> io::Result<(Box<dyn Opener>, Box<dyn Acceptor>)> {
    let (c, s) = tcp_pair().await?;
    match peer {
        "yamux" => {
            Ok((Box::new(yamux_end(c, yamux::Mode::Client).0), Box::new(yamux_end(s, yamux::Mode::Server).1)))
        }
        "tokio-yamux" => {
            let cfg = tokio_yamux::config::Config::default;
            let (client, _) = tokio_yamux_end(tokio_yamux::session::Session::new_client(c, cfg()));
            let (_, server) = tokio_yamux_end(tokio_yamux::session::Session::new_server(s, cfg()));
            Ok((Box::new(client), Box::new(server)))
        }
        "async_smux" => {
            let (connector, _, worker) = async_smux::MuxBuilder::client().with_connection(c).build();
            tokio::spawn(worker);
            let (_, acceptor, worker) = async_smux::MuxBuilder::server().with_connection(s).build();
            tokio::spawn(worker);
            Ok((Box::new(connector), Box::new(acceptor)))
        }
        "smux" => {
            let (client, server) = tokio::join!(
                smux::Session::client(c, smux::Config::default()),
                smux::Session::server(s, smux::Config::default())
            );
            Ok((Box::new(SmuxEnd(client.map_err(other)?)), Box::new(SmuxEnd(server.map_err(other)?))))
        }
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown peer {peer:?}"))),
    }
}

// ---- yamux (rust-libp2p): a Connection does nothing unless polled -------------------------

type YamuxOpen = oneshot::Sender<yamux::Result<yamux::Stream>>;

/// Requests outbound streams from the task that drives the connection.
pub struct YamuxOpener(mpsc::UnboundedSender<YamuxOpen>);
/// Inbound streams, as the driving task hands them over.
pub struct YamuxAcceptor(mpsc::UnboundedReceiver<yamux::Stream>);

/// Spawn the task that drives one end of a yamux connection, as yamux's documentation asks
/// ("the connection must be polled via `poll_next_inbound` to make progress"): it answers
/// open requests with `poll_new_outbound` and hands inbound streams over.
fn yamux_end(tcp: TcpStream, mode: yamux::Mode) -> (YamuxOpener, YamuxAcceptor) {
    let mut conn = yamux::Connection::new(tcp.compat(), yamux::Config::default(), mode);
    let (open_tx, mut open_rx) = mpsc::unbounded_channel::<YamuxOpen>();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    // An open request that `poll_new_outbound` has not answered yet (it registered a wake-up).
    let mut waiting: Option<YamuxOpen> = None;
    tokio::spawn(future::poll_fn(move |cx| loop {
        if waiting.is_none() {
            if let Poll::Ready(Some(req)) = open_rx.poll_recv(cx) {
                waiting = Some(req);
            }
        }
        if let Some(req) = waiting.take() {
            match conn.poll_new_outbound(cx) {
                Poll::Ready(r) => {
                    let _ = req.send(r);
                    continue;
                }
                Poll::Pending => waiting = Some(req),
            }
        }
        match conn.poll_next_inbound(cx) {
            Poll::Ready(Some(Ok(s))) => {
                let _ = in_tx.send(s);
            }
            Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        }
    }));
    (YamuxOpener(open_tx), YamuxAcceptor(in_rx))
}

impl Opener for YamuxOpener {
    fn open(&mut self) -> BoxFuture<'_, io::Result<BoxConn>> {
        async move {
            let (tx, rx) = oneshot::channel();
            self.0.send(tx).map_err(|_| other("yamux connection ended"))?;
            let s = rx.await.map_err(|_| other("yamux connection ended"))?.map_err(other)?;
            Ok(Box::new(s.compat()) as BoxConn)
        }
        .boxed()
    }
}

impl Acceptor for YamuxAcceptor {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<BoxConn>> {
        async move {
            let s = self.0.recv().await.ok_or_else(|| other("yamux connection ended"))?;
            Ok(Box::new(s.compat()) as BoxConn)
        }
        .boxed()
    }
}

// ---- tokio-yamux (tentacle): the Session is a Stream of inbound streams; a Control opens ----

/// Opens streams through the session's control handle.
pub struct TokioYamuxOpener(tokio_yamux::Control);
/// Inbound streams, as the task that polls the session hands them over.
pub struct TokioYamuxAcceptor(mpsc::UnboundedReceiver<tokio_yamux::StreamHandle>);

/// Spawn the task that polls one end's session (which also serves the control's requests).
fn tokio_yamux_end(
    mut session: tokio_yamux::session::Session<TcpStream>,
) -> (TokioYamuxOpener, TokioYamuxAcceptor) {
    let control = session.control();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(s)) = session.next().await {
            let _ = in_tx.send(s);
        }
    });
    (TokioYamuxOpener(control), TokioYamuxAcceptor(in_rx))
}

impl Opener for TokioYamuxOpener {
    fn open(&mut self) -> BoxFuture<'_, io::Result<BoxConn>> {
        async move { Ok(Box::new(self.0.open_stream().await.map_err(other)?) as BoxConn) }.boxed()
    }
}

impl Acceptor for TokioYamuxAcceptor {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<BoxConn>> {
        async move {
            let s = self.0.recv().await.ok_or_else(|| other("tokio-yamux session ended"))?;
            Ok(Box::new(s) as BoxConn)
        }
        .boxed()
    }
}

// ---- async_smux: connector, acceptor and a spawned worker -----------------------------------

impl Opener for async_smux::MuxConnector<TcpStream> {
    fn open(&mut self) -> BoxFuture<'_, io::Result<BoxConn>> {
        future::ready(self.connect().map(|s| Box::new(s) as BoxConn).map_err(other)).boxed()
    }
}

impl Acceptor for async_smux::MuxAcceptor<TcpStream> {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<BoxConn>> {
        async move {
            let s = async_smux::MuxAcceptor::accept(self)
                .await
                .ok_or_else(|| other("async_smux session ended"))?;
            Ok(Box::new(s) as BoxConn)
        }
        .boxed()
    }
}

// ---- smux: one Session handle opens and accepts (its tasks are spawned by the crate) --------

/// Either end of an smux session.
pub struct SmuxEnd(smux::Session);

impl Opener for SmuxEnd {
    fn open(&mut self) -> BoxFuture<'_, io::Result<BoxConn>> {
        async move { Ok(Box::new(self.0.open_stream().await.map_err(other)?) as BoxConn) }.boxed()
    }
}

impl Acceptor for SmuxEnd {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<BoxConn>> {
        async move { Ok(Box::new(self.0.accept_stream().await.map_err(other)?) as BoxConn) }.boxed()
    }
}
