//! Jump-host mode (SPEC §8, `runtime_flags.ssh_allow_direct_tcpip`): on a route-less
//! connection, a `direct-tcpip` channel whose host is a route name becomes a raw TCP
//! pipe to that route's upstream address, so `ssh -J alice@gateway bob@prod`
//! authenticates end to end with the upstream. The pipe needs an [`AccessGranted`]
//! (the route's policy, evaluated without a login). tether never learns the login
//! the client uses upstream, so criteria on it (`ssh_username*`, `ssh_ca`'s
//! principal) cannot be evaluated and deny: a route only `deploy` may use is no raw
//! TCP pipe for everyone else (fail closed). The port the client asked for is
//! ignored, the route decides.
//!
//! Flow control: a TCP read is written to the channel only once the client's window
//! has room, and a channel message is read only after the previous one was written
//! to the socket, so nothing buffers without bound.

use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tether_core::audit::AuditEvent;

use crate::access::AccessGranted;
use crate::upstream::dial_in_order;

/// Who a pipe is for, for its audit events.
#[derive(Clone, Debug)]
pub(crate) struct JumpAudit {
    pub(crate) conn: u64,
    pub(crate) email: String,
}

/// Bytes read from the upstream socket per channel write.
const CHUNK: usize = 32 * 1024;

/// Connects to the granted route's upstream and pipes the channel to it; the
/// channel open is accepted only once the TCP connection stands.
pub(crate) async fn pipe(
    grant: AccessGranted,
    audit: JumpAudit,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
) {
    let target = grant.target();
    // The route's upstreams in order, as for a route connection.
    let tcp = match dial_in_order(target).await {
        Ok((_, tcp)) => tcp,
        Err(e) => {
            let detail = std::error::Error::source(&e)
                .map_or_else(|| "timed out".to_string(), ToString::to_string);
            tracing::info!(route = %target.route, "jump: {e} ({detail})");
            reply.reject(unreachable(&target.route)).await;
            return;
        }
    };
    reply.accept().await;
    AuditEvent::JumpOpened {
        conn: audit.conn,
        route: target.route.clone(),
        email: audit.email,
    }
    .emit();
    let (to_client, to_upstream) = relay(channel, tcp).await;
    AuditEvent::JumpClosed {
        conn: audit.conn,
        route: target.route.clone(),
        bytes_to_upstream: to_upstream,
        bytes_to_client: to_client,
    }
    .emit();
}

fn unreachable(route: &str) -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code: 2,
        reason: format!("route {route:?}: upstream unreachable"),
    }
}

/// Pipes until either side ends; returns (bytes to the client, bytes upstream).
async fn relay(channel: Channel<Msg>, tcp: TcpStream) -> (u64, u64) {
    let (mut client_read, client_write) = channel.split();
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let mut to_client = 0u64;
    let mut to_upstream = 0u64;

    let client_to_tcp = async {
        loop {
            match client_read.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    to_upstream += data.len() as u64;
                    if tcp_write.write_all(&data).await.is_err() {
                        return;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    let _ = tcp_write.shutdown().await;
                }
                Some(ChannelMsg::Close) | None => return,
                Some(_) => {}
            }
        }
    };
    let tcp_to_client = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match tcp_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            to_client += n as u64;
            let Some(chunk) = buf.get(..n) else { return };
            if client_write.data(chunk).await.is_err() {
                return;
            }
        }
    };
    let upstream_ended = tokio::select! {
        () = client_to_tcp => false,
        () = tcp_to_client => true,
    };
    if upstream_ended {
        let _ = client_write.eof().await;
    }
    let _ = client_write.close().await;
    (to_client, to_upstream)
}
