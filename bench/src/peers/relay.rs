//! A TCP relay on loopback that counts the bytes it carries each way, so
//! every tool's traffic is measured at the same place and the same way:
//! application bytes (HTTP, TLS, rsync's protocol), without IP and TCP
//! headers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::task::{AbortHandle, JoinSet};

/// Bytes carried so far: from the side that connects to the relay towards
/// the target, and back.
#[derive(Default)]
pub struct Counts {
    pub to_target: AtomicU64,
    pub from_target: AtomicU64,
}

impl Counts {
    pub fn get(&self) -> (u64, u64) {
        (
            self.to_target.load(Ordering::Relaxed),
            self.from_target.load(Ordering::Relaxed),
        )
    }
}

/// A listening relay; dropping it closes the listener and every connection
/// it carries.
pub struct Relay {
    pub port: u16,
    pub counts: Arc<Counts>,
    listener: AbortHandle,
}

impl Relay {
    pub fn start(rt: &Handle, target: SocketAddr) -> Result<Relay> {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .context("binding a relay port")?;
        let port = listener.local_addr()?.port();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let task = rt.spawn(async move {
            // Held by the listener's task, so that aborting it drops the
            // set and with it every connection still open.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        conns.spawn(carry(client, target, c.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Relay {
            port,
            counts,
            listener: task.abort_handle(),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

async fn carry(client: TcpStream, target: SocketAddr, counts: Arc<Counts>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    // Without this, a small message written in two parts waits out the
    // peer's delayed acknowledgement, which would add tens of
    // milliseconds to every latency measured through the relay.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, &counts.to_target);
    let down = pump(sr, cw, &counts.from_target);
    let _ = tokio::join!(up, down);
}

/// Copies one direction until its end, then closes that direction only:
/// rsync and HTTP both go on reading after the other side finished
/// writing.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: &AtomicU64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}
