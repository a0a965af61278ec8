//! A TCP relay between a client under test and the server, for tests that
//! need the network to misbehave at a known place instead of at a moment:
//! it counts the bytes each way, records the head of every request, holds
//! traffic once a byte budget is spent (so a process can be killed midway
//! through a transfer without racing it), and breaks requests — reset,
//! cut part way, or stalled — either planned for the next request that
//! starts a given way, or drawn from a seeded generator.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Requests that change something on the server meet a drawn fault this
/// many times as often as others: a lost answer to one of those is where a
/// client can go wrong, whereas most reads are journal pulls.
pub const WRITE_FACTOR: u32 = 10;

/// What the network does to one request.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// The connection is reset when the request arrives.
    Reset,
    /// The connection closes after this many thousandths of the request
    /// (which never reaches the server whole) or of its answer (lost
    /// after the server acted on the request).
    CutRequest(u64),
    CutAnswer(u64),
    /// The request, or its answer, is held this many milliseconds.
    StallRequest(u64),
    StallAnswer(u64),
}

/// Faults are drawn per request, in the order the client makes them, from
/// the relay's own seeded generator: a client that makes one request at a
/// time meets the same faults every run, whichever pooled connection each
/// request travels on.
pub struct Relay {
    pub url: String,
    /// Bytes relayed server → client and client → server.
    pub down: AtomicU64,
    pub up: AtomicU64,
    /// Traffic each way stops (is held, not dropped) once past these.
    pub down_limit: AtomicU64,
    pub up_limit: AtomicU64,
    /// If set, the up budget holds only requests whose first line starts
    /// so (a link that stops under the blocks but still lets a commit
    /// through, whichever comes first); all requests when `None`.
    pub up_limit_only: Mutex<Option<String>>,
    /// A fault for the next request whose first line starts so, whether
    /// drawn faults are on or not.
    pub planned: Mutex<Option<(String, Fault)>>,
    heads: Mutex<Vec<String>>,
    faults: AtomicBool,
    per_mille: u32,
    rng: Mutex<StdRng>,
    requests: AtomicU64,
    events: Mutex<Vec<String>>,
}

impl Relay {
    /// A relay that breaks nothing until told to.
    pub async fn start(upstream: &str) -> Arc<Relay> {
        Relay::with_faults(upstream, 0, 0).await
    }

    /// A relay that, while [`Relay::set_faults`] is on, breaks `per_mille`
    /// requests in a thousand, drawn from `seed`.
    pub async fn with_faults(upstream: &str, seed: u64, per_mille: u32) -> Arc<Relay> {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Arc::new(Relay {
            url: format!("http://{}", listener.local_addr().unwrap()),
            down: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down_limit: AtomicU64::new(u64::MAX),
            up_limit: AtomicU64::new(u64::MAX),
            up_limit_only: Mutex::new(None),
            planned: Mutex::new(None),
            heads: Mutex::new(Vec::new()),
            faults: AtomicBool::new(false),
            per_mille,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            requests: AtomicU64::new(0),
            events: Mutex::new(Vec::new()),
        });
        let r = relay.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                // Without this, a message relayed in two writes waits out
                // the peer's delayed acknowledgement.
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let conn = Arc::new(Conn {
                    answer_fault: Mutex::new(None),
                    cut: watch::Sender::new(false),
                });
                tokio::spawn(pipe(r.clone(), conn.clone(), true, cr, sw));
                tokio::spawn(pipe(r.clone(), conn, false, sr, cw));
            }
        });
        relay
    }

    /// Counters, budgets and recorded heads back to their start.
    pub fn reset(&self) {
        self.down.store(0, Ordering::SeqCst);
        self.up.store(0, Ordering::SeqCst);
        self.down_limit.store(u64::MAX, Ordering::SeqCst);
        self.up_limit.store(u64::MAX, Ordering::SeqCst);
        *self.up_limit_only.lock().unwrap() = None;
        self.heads.lock().unwrap().clear();
    }

    /// The head of every request relayed since the last reset.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    pub fn set_faults(&self, on: bool) {
        self.faults.store(on, Ordering::SeqCst);
    }

    /// The faults that happened since the last call, for a seed's log.
    pub fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }

    fn event(&self, what: String) {
        self.events.lock().unwrap().push(what);
    }

    /// The fate of the client's next request (`line` is its first line);
    /// `None` for most.
    fn draw(&self, line: &str) -> Option<Fault> {
        {
            let mut planned = self.planned.lock().unwrap();
            if planned
                .as_ref()
                .is_some_and(|(p, _)| line.starts_with(p.as_str()))
            {
                return planned.take().map(|(_, f)| f);
            }
        }
        if !self.faults.load(Ordering::SeqCst) {
            return None;
        }
        let per_mille = if line.starts_with("POST /api/v1/files/") {
            self.per_mille * WRITE_FACTOR
        } else {
            self.per_mille
        };
        let mut rng = self.rng.lock().unwrap();
        if rng.random_range(0..1000) >= per_mille {
            return None;
        }
        let at = rng.random_range(0..1000);
        let ms = rng.random_range(20..200);
        Some(match rng.random_range(0..10) {
            0 => Fault::Reset,
            1..=3 => Fault::CutRequest(at),
            4..=7 => Fault::CutAnswer(at),
            8 => Fault::StallRequest(ms),
            _ => Fault::StallAnswer(ms),
        })
    }

    /// Whether the up budget holds the request that starts `chunk`.
    fn limits(&self, chunk: &[u8]) -> bool {
        self.up_limit_only
            .lock()
            .unwrap()
            .as_deref()
            .is_none_or(|prefix| chunk.starts_with(prefix.as_bytes()))
    }

    /// Waits while the budget of one direction is spent.
    async fn hold(&self, up: bool) {
        let (count, limit) = if up {
            (&self.up, &self.up_limit)
        } else {
            (&self.down, &self.down_limit)
        };
        while count.load(Ordering::SeqCst) >= limit.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn count(&self, up: bool, n: usize) {
        let count = if up { &self.up } else { &self.down };
        count.fetch_add(n as u64, Ordering::SeqCst);
    }
}

/// One relayed connection, shared by its two directions.
struct Conn {
    /// Set with the request whose answer is to be broken. The client
    /// sends a request only after the previous answer has arrived whole,
    /// so the next bytes from the server are that answer.
    answer_fault: Mutex<Option<(u64, String, Fault)>>,
    /// Set when either direction cuts the connection, to end both.
    cut: watch::Sender<bool>,
}

/// Length of the HTTP message that starts `chunk`: its head plus the body
/// its `Content-Length` announces, or the chunk alone if either is unknown
/// (a request without a body, or a head split across reads).
fn message_len(chunk: &[u8]) -> u64 {
    let Some(head) = chunk.windows(4).position(|w| w == b"\r\n\r\n") else {
        return chunk.len() as u64;
    };
    let body = String::from_utf8_lossy(&chunk[..head])
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<u64>().ok());
    match body {
        Some(body) => head as u64 + 4 + body,
        None => chunk.len() as u64,
    }
}

/// Whether `chunk` starts a request (the bytes of a body never do, even
/// when a body without `Content-Length` hides where the request ends).
fn starts_request(chunk: &[u8]) -> bool {
    [
        "GET ", "PUT ", "POST ", "HEAD ", "PATCH ", "DELETE ", "OPTIONS ",
    ]
    .iter()
    .any(|m| chunk.starts_with(m.as_bytes()))
}

/// What happens to the current message once its fault is known: cut it
/// after so many bytes, having relayed so many, with this log line.
type Cut = Option<(u64, u64, String)>;

/// Relays one direction of a connection (`up`: client to server), noting
/// where requests begin and applying the fault drawn for each.
async fn pipe(
    relay: Arc<Relay>,
    conn: Arc<Conn>,
    up: bool,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
) {
    let mut cut_seen = conn.cut.subscribe();
    let mut buf = vec![0u8; 64 << 10];
    // Bytes of the current request still to come (up only).
    let mut rest = 0u64;
    // Whether the up budget holds the current request.
    let mut limited = true;
    let mut cut_at: Cut = None;
    loop {
        let len = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(len) => len,
            },
            _ = cut_seen.wait_for(|c| *c) => return,
        };
        let chunk = &buf[..len];
        if up && rest == 0 {
            limited = relay.limits(chunk);
        }
        if !up || limited {
            relay.hold(up).await;
        }
        let fault = if up && rest == 0 {
            rest = message_len(chunk);
            request_fault(&relay, &conn, chunk)
        } else if !up {
            conn.answer_fault.lock().unwrap().take()
        } else {
            None
        };
        if up {
            rest = rest.saturating_sub(len as u64);
        }
        if let Some((n, line, fault)) = fault
            && !apply(&relay, up, chunk, (n, &line, fault), &mut cut_at).await
        {
            // A reset, not a close: the linger goes before the other
            // direction is told to end.
            let _ = from.as_ref().set_zero_linger();
            conn.cut.send_replace(true);
            return;
        }
        relay.count(up, len);
        if let Some((at, done, msg)) = &mut cut_at {
            if *done + len as u64 > *at {
                let keep = (*at - *done) as usize;
                let _ = to.write_all(&chunk[..keep]).await;
                relay.event(std::mem::take(msg));
                conn.cut.send_replace(true);
                return;
            }
            *done += len as u64;
        }
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Notes a request that starts `chunk` and draws its fault; a fault meant
/// for the answer is left on the connection for the other direction.
fn request_fault(relay: &Relay, conn: &Conn, chunk: &[u8]) -> Option<(u64, String, Fault)> {
    let text = String::from_utf8_lossy(chunk);
    if starts_request(chunk) {
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        relay.heads.lock().unwrap().push(head.to_owned());
    }
    let n = relay.requests.fetch_add(1, Ordering::SeqCst);
    let line = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches(" HTTP/1.1")
        .to_owned();
    match relay.draw(&line)? {
        f @ (Fault::CutAnswer(_) | Fault::StallAnswer(_)) => {
            *conn.answer_fault.lock().unwrap() = Some((n, line, f));
            None
        }
        f => Some((n, line, f)),
    }
}

/// Applies a fault to the message that starts `chunk`; false when the
/// connection is to be reset now.
async fn apply(
    relay: &Relay,
    up: bool,
    chunk: &[u8],
    (n, line, fault): (u64, &str, Fault),
    cut_at: &mut Cut,
) -> bool {
    let what = if up { "request" } else { "answer" };
    match fault {
        Fault::Reset => {
            relay.event(format!("request {n} ({line}): connection reset"));
            return false;
        }
        Fault::CutRequest(at) | Fault::CutAnswer(at) => {
            let total = message_len(chunk);
            let at = total * at / 1000;
            let msg = format!("request {n} ({line}): {what} cut after {at} of {total} bytes");
            *cut_at = Some((at, 0, msg));
        }
        Fault::StallRequest(ms) | Fault::StallAnswer(ms) => {
            relay.event(format!("request {n} ({line}): {what} held {ms} ms"));
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
    true
}
