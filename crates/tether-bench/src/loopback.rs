//! Many client source addresses on one machine: on Linux all of 127.0.0.0/8 is
//! loopback, so a client socket bound to 127.0.0.N before `connect` reaches a server
//! on 127.0.0.1 from its own address. Load generators use this to look like many
//! hosts (per-source limits see them apart; 127.0.0.1 stays the "legitimate user")
//! and to spread their connections over many addresses, each with its own range of
//! ephemeral ports.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

/// The first and last host byte of the load generators' addresses (127.0.0.2 to
/// 127.0.0.250; 127.0.0.1 is the user's).
pub const FIRST: u8 = 2;
pub const LAST: u8 = 250;

/// How many distinct load-generator addresses there are.
pub const COUNT: usize = (LAST - FIRST + 1) as usize;

/// The `i`-th load generator address, round robin over 127.0.0.2–127.0.0.250.
pub fn source(i: usize) -> Ipv4Addr {
    let host = FIRST as usize + i % COUNT;
    Ipv4Addr::new(127, 0, 0, u8::try_from(host).unwrap_or(LAST))
}

/// Connects to `dst` from `src` (port chosen by the kernel at bind).
pub async fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((src, 0)))?;
    let stream = socket.connect(dst).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `"127.0.0.2-127.0.0.250 (249 addresses)"`.
pub fn describe() -> String {
    format!("127.0.0.{FIRST}-127.0.0.{LAST} ({COUNT} addresses)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin() {
        assert_eq!(source(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source(248), Ipv4Addr::new(127, 0, 0, 250));
        assert_eq!(source(249), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(COUNT, 249);
    }

    #[tokio::test]
    async fn connects_from_another_loopback_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(connect_from(source(5), addr), listener.accept());
        let client = client.unwrap();
        let (_, peer) = accepted.unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)));
        assert_eq!(client.local_addr().unwrap().ip(), peer.ip());
    }
}
