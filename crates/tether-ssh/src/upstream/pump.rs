//! The relay of one channel pair: the SSH client's channel on tether's server side and
//! the matching upstream channel.
//!
//! Upstream → client: data, extended data (stderr), eof, exit-status, exit-signal,
//! xon-xoff and close, in the order they arrived. Client → upstream: data, extended
//! data, eof and close. Session requests are NOT relayed here: russh delivers them to
//! the server `Handler` callbacks, which forward them with
//! [`UpstreamChannel`](super::UpstreamChannel) and answer the client with the
//! upstream's reply.
//!
//! Flow control: every write awaits the receiving peer's SSH window (russh's
//! `ChannelWriteHalf::data_bytes` reserves window before sending), and a side is not
//! read again until the previous message was handed on. Unread messages back up in
//! russh's bounded per-channel queues and then in TCP — nothing here buffers without
//! bound. Everything sent to the client goes through one ordered queue (the channel
//! writer and the server `Handle` share it), so exit-status never overtakes output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use russh::{server, Channel, ChannelMsg};
use tether_core::metrics::Metrics;

use super::channel::{UpstreamChannel, UpstreamReader};
use crate::record::Tap;

/// Which side ended the relay, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PumpEnd {
    /// The SSH client closed its channel; the upstream channel was closed too.
    ClientClosed,
    /// The upstream closed its channel; the client channel was closed too.
    UpstreamClosed,
    /// The client connection went away (a write to it failed).
    ClientLost,
    /// The upstream connection went away; the client channel is left open for the
    /// caller to explain and close (the connection actor disconnects the client).
    UpstreamLost,
    /// The channel's recording could not be written on a fail-closed route; both
    /// channels are left open for the caller to explain and close.
    RecordingFailed,
}

/// What a finished relay did (for the audit log and metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PumpReport {
    /// How it ended.
    pub end: PumpEnd,
    /// Payload bytes relayed from the client to the upstream.
    pub bytes_to_upstream: u64,
    /// Payload bytes relayed from the upstream to the client (stdout + stderr).
    pub bytes_to_client: u64,
    /// The upstream command's exit status, if it sent one.
    pub exit_status: Option<u32>,
    /// The signal that ended the upstream command, if it sent one.
    pub exit_signal: Option<String>,
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Relays one channel pair until either side closes; see the module docs.
///
/// `client` is the channel as russh's server gave it (`channel_open_session`,
/// `channel_open_direct_tcpip`, or opened with `Handle::channel_open_forwarded_tcpip`
/// / `channel_open_agent` / `channel_open_x11`); `client_handle` is that connection's
/// server `Handle` (used for exit-signal and xon-xoff, which the channel writer
/// cannot send). Cancel by dropping the future (e.g. in a `select!` with the
/// connection's cancellation token).
pub async fn pump(
    client: Channel<server::Msg>,
    client_handle: server::Handle,
    upstream: UpstreamChannel,
    reader: UpstreamReader,
    metrics: Arc<Metrics>,
) -> PumpReport {
    pump_tapped(client, client_handle, upstream, reader, metrics, None).await
}

/// [`pump`], with `tap` (on a recorded route) getting every chunk before it is
/// handed on (`crate::record`).
pub(crate) async fn pump_tapped(
    client: Channel<server::Msg>,
    client_handle: server::Handle,
    upstream: UpstreamChannel,
    reader: UpstreamReader,
    metrics: Arc<Metrics>,
    tap: Option<Tap>,
) -> PumpReport {
    let (mut client_read, client_write) = client.split();
    let client_id = client_write.id();
    let mut upstream_read = reader.read;
    let to_upstream_bytes = AtomicU64::new(0);
    let to_client_bytes = AtomicU64::new(0);
    let mut exit_status = None;
    let mut exit_signal = None;

    let client_to_upstream = async {
        let up = upstream.writer();
        loop {
            let msg = client_read.wait().await;
            if let (Some(tap), Some(ChannelMsg::Data { data })) = (&tap, &msg) {
                if tap.input(data).await.is_err() {
                    return PumpEnd::RecordingFailed;
                }
            }
            let sent = match msg {
                Some(ChannelMsg::Data { data }) => {
                    to_upstream_bytes.fetch_add(len_u64(data.len()), Ordering::Relaxed);
                    metrics
                        .bytes_to_upstream
                        .fetch_add(len_u64(data.len()), Ordering::Relaxed);
                    up.data_bytes(data).await
                }
                Some(ChannelMsg::ExtendedData { data, ext }) => {
                    to_upstream_bytes.fetch_add(len_u64(data.len()), Ordering::Relaxed);
                    metrics
                        .bytes_to_upstream
                        .fetch_add(len_u64(data.len()), Ordering::Relaxed);
                    up.extended_data_bytes(ext, data).await
                }
                Some(ChannelMsg::Eof) => up.eof().await,
                Some(ChannelMsg::Close) | None => {
                    let _ = up.close().await;
                    return PumpEnd::ClientClosed;
                }
                // Requests are handled by the Handler callbacks; window adjustments
                // are russh's business.
                Some(_) => Ok(()),
            };
            if sent.is_err() {
                return PumpEnd::UpstreamLost;
            }
        }
    };

    let upstream_to_client = async {
        loop {
            let msg = upstream_read.wait().await;
            if let (
                Some(tap),
                Some(ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }),
            ) = (&tap, &msg)
            {
                if tap.output(data).await.is_err() {
                    return PumpEnd::RecordingFailed;
                }
            }
            let sent = match msg {
                Some(ChannelMsg::Data { data }) => {
                    to_client_bytes.fetch_add(len_u64(data.len()), Ordering::Relaxed);
                    metrics
                        .bytes_to_client
                        .fetch_add(len_u64(data.len()), Ordering::Relaxed);
                    client_write.data_bytes(data).await.is_ok()
                }
                Some(ChannelMsg::ExtendedData { data, ext }) => {
                    to_client_bytes.fetch_add(len_u64(data.len()), Ordering::Relaxed);
                    metrics
                        .bytes_to_client
                        .fetch_add(len_u64(data.len()), Ordering::Relaxed);
                    client_write.extended_data_bytes(ext, data).await.is_ok()
                }
                Some(ChannelMsg::Eof) => client_write.eof().await.is_ok(),
                Some(ChannelMsg::ExitStatus { exit_status: code }) => {
                    exit_status = Some(code);
                    client_write.exit_status(code).await.is_ok()
                }
                Some(ChannelMsg::ExitSignal {
                    signal_name,
                    core_dumped,
                    error_message,
                    lang_tag,
                }) => {
                    exit_signal = Some(format!("{signal_name:?}"));
                    client_handle
                        .exit_signal_request(
                            client_id,
                            signal_name,
                            core_dumped,
                            error_message,
                            lang_tag,
                        )
                        .await
                        .is_ok()
                }
                Some(ChannelMsg::XonXoff { client_can_do }) => client_handle
                    .xon_xoff_request(client_id, client_can_do)
                    .await
                    .is_ok(),
                Some(ChannelMsg::Close) => {
                    let _ = client_write.close().await;
                    return PumpEnd::UpstreamClosed;
                }
                // The upstream connection is gone: the client channel stays open so
                // the caller can tell the client why before closing it.
                None => return PumpEnd::UpstreamLost,
                // Success/Failure go to the waiting UpstreamChannel request via the
                // client handler; window adjustments are russh's business.
                Some(_) => true,
            };
            if !sent {
                return PumpEnd::ClientLost;
            }
        }
    };

    let end = tokio::select! {
        end = client_to_upstream => end,
        end = upstream_to_client => end,
    };
    PumpReport {
        end,
        bytes_to_upstream: to_upstream_bytes.load(Ordering::Relaxed),
        bytes_to_client: to_client_bytes.load(Ordering::Relaxed),
        exit_status,
        exit_signal,
    }
}
