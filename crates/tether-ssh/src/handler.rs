//! The russh `Handler`: deliberately thin (STYLE habit 5).
//!
//! Every callback that matters becomes an [`Event`] on the connection actor's
//! queue; callbacks that need an answer carry a oneshot and wait for it. Channel
//! data and EOF are left to russh's per-channel queues (read by whoever serves the
//! channel), so bulk transfers never pass through the actor. The handler keeps no state
//! and makes no decisions, so everything about a connection lives in one place (the
//! actor). If the actor is gone, every callback fails and russh ends the connection.

use russh::keys::{Certificate, PublicKey};
use russh::server::{
    Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, Pty, Sig};
use tokio::sync::{mpsc, oneshot};

use crate::error::HandlerError;
use crate::events::{AuthRequest, ChannelRequest, Event, OtherChannel};

/// The per-connection russh handler.
#[derive(Debug)]
pub(crate) struct Handler {
    /// Boxed events: tokio allocates a channel's slots 32 at a time, up front, so
    /// the queue costs 32 pointers per connection instead of 32 events.
    events: mpsc::Sender<Box<Event>>,
    /// The banner that came with the last verdict, until russh sends it.
    banner: Option<String>,
}

impl Handler {
    /// A handler that feeds `events`.
    pub(crate) fn new(events: mpsc::Sender<Box<Event>>) -> Self {
        Self {
            events,
            banner: None,
        }
    }

    async fn send(&self, event: Event) -> Result<(), HandlerError> {
        self.events
            .send(Box::new(event))
            .await
            .map_err(|_| HandlerError::ActorGone)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Event,
    ) -> Result<T, HandlerError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| HandlerError::ActorGone)
    }

    async fn auth(&mut self, user: &str, request: AuthRequest) -> Result<Auth, HandlerError> {
        let user = user.to_string();
        let reply = self
            .ask(|reply| Event::Auth {
                user,
                request,
                reply,
            })
            .await?;
        self.banner = reply.banner;
        Ok(reply.auth)
    }

    async fn request(
        &self,
        channel: ChannelId,
        request: ChannelRequest,
        session: &mut Session,
    ) -> Result<(), HandlerError> {
        let ok = self
            .ask(|reply| Event::Request {
                channel,
                request,
                reply,
            })
            .await?;
        if ok {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }
}

impl russh::server::Handler for Handler {
    type Error = HandlerError;

    fn auth_banner(&mut self) -> Option<String> {
        self.banner.take()
    }

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        self.auth(user, AuthRequest::None).await
    }

    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth, Self::Error> {
        self.auth(user, AuthRequest::Password).await
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.auth(user, AuthRequest::Offered(offer.public_key.clone()))
            .await
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let request = AuthRequest::Verified {
            key: key.public_key.clone(),
            cert: None,
        };
        self.auth(user, request).await
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        // Bindings are per key: a certificate authenticates as its certified key;
        // the certificate itself is kept for the policy's `ssh_ca` criterion.
        let request = AuthRequest::Verified {
            key: PublicKey::new(certificate.public_key().clone(), ""),
            cert: Some(Box::new(certificate.clone())),
        };
        self.auth(user, request).await
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let responded = response.is_some();
        self.auth(user, AuthRequest::Keyboard { responded }).await
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.send(Event::OpenSession { channel, reply }).await
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let kind = OtherChannel::DirectTcpip {
            host: host_to_connect.to_string(),
            port: port_to_connect,
            originator_address: originator_address.to_string(),
            originator_port,
        };
        self.send(Event::OpenOther {
            kind,
            channel,
            reply,
        })
        .await
    }

    async fn channel_open_x11(
        &mut self,
        channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let kind = OtherChannel::Unsupported("x11");
        self.send(Event::OpenOther {
            kind,
            channel,
            reply,
        })
        .await
    }

    async fn channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let kind = OtherChannel::Unsupported("forwarded-tcpip");
        self.send(Event::OpenOther {
            kind,
            channel,
            reply,
        })
        .await
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        _socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let kind = OtherChannel::Unsupported("direct-streamlocal");
        self.send(Event::OpenOther {
            kind,
            channel,
            reply,
        })
        .await
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.send(Event::Close(channel)).await
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = ChannelRequest::Pty {
            term: term.to_string(),
            col_width,
            row_height,
            pix_width,
            pix_height,
            modes: modes.to_vec(),
        };
        self.request(channel, request, session).await
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        single_connection: bool,
        x11_auth_protocol: &str,
        x11_auth_cookie: &str,
        x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = ChannelRequest::X11 {
            single_connection,
            protocol: x11_auth_protocol.to_string(),
            cookie: x11_auth_cookie.to_string(),
            screen: x11_screen_number,
        };
        self.request(channel, request, session).await
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = ChannelRequest::Env {
            name: variable_name.to_string(),
            value: variable_value.to_string(),
        };
        self.request(channel, request, session).await
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.request(channel, ChannelRequest::Shell, session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.request(channel, ChannelRequest::Exec(data.to_vec()), session)
            .await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = ChannelRequest::Subsystem(name.to_string());
        self.request(channel, request, session).await
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = ChannelRequest::WindowChange {
            col_width,
            row_height,
            pix_width,
            pix_height,
        };
        self.request(channel, request, session).await
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // russh sends success/failure itself from the returned bool.
        self.ask(|reply| Event::Request {
            channel,
            request: ChannelRequest::Agent,
            reply,
        })
        .await
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Signals carry no reply; the answer is ignored.
        let _ = self
            .ask(|reply| Event::Request {
                channel,
                request: ChannelRequest::Signal(signal),
                reply,
            })
            .await?;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let (address, asked) = (address.to_string(), *port);
        let bound = self
            .ask(|reply| Event::TcpipForward {
                address,
                port: asked,
                reply,
            })
            .await?;
        match bound {
            Some(p) => {
                *port = p;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let address = address.to_string();
        self.ask(|reply| Event::CancelTcpipForward {
            address,
            port,
            reply,
        })
        .await
    }
}
