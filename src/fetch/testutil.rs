//! Test helpers for the fetch module: tiny raw HTTP/1.1 servers on
//! 127.0.0.0/8 and fetcher builders. Only used by `tests.rs`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{FetchConfig, Fetcher, parse_allow_list};

pub(super) const MIB: u64 = 1024 * 1024;

/// A test server: its address and how many connections it accepted.
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Server {
    pub(super) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    pub(super) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Starts a server on `ip:0`; `handler` gets each connection and its request head.
pub(super) async fn serve<F, Fut>(ip: &str, handler: F) -> Server
where
    F: Fn(TcpStream, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let head = read_request(&mut stream).await;
                handler(stream, head).await;
            });
        }
    });
    Server { addr, accepted }
}

/// Reads the request head (and a small body announced by Content-Length).
async fn read_request(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = String::from_utf8_lossy(&buf[end + 4..]);
            return format!("{head}{body}");
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&buf).to_string(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Writes a complete response with `Connection: close`.
pub(super) async fn reply(mut stream: TcpStream, status: &str, headers: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

/// A server that answers 200 "canary" and counts connections; it must stay untouched.
pub(super) async fn canary() -> Server {
    serve("127.0.0.1", |s, _| reply(s, "200 OK", "", b"canary")).await
}

/// Writes `head` and then up to `total` zero bytes, reporting how many were written.
pub(super) async fn blast(
    mut stream: TcpStream,
    head: String,
    total: u64,
    done: mpsc::UnboundedSender<u64>,
) {
    let zeros = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    if stream.write_all(head.as_bytes()).await.is_ok() {
        while written < total {
            let n = (total - written).min(zeros.len() as u64) as usize;
            if stream.write_all(&zeros[..n]).await.is_err() {
                break;
            }
            written += n as u64;
        }
    }
    let _ = done.send(written);
}

pub(super) fn fetcher_with(allow: &str, f: impl FnOnce(&mut FetchConfig)) -> Fetcher {
    let mut config = FetchConfig {
        allow: parse_allow_list(allow).expect("allow list"),
        timeout: Duration::from_secs(10),
        user_agent: "pixbatch/9.9.9-test".into(),
        ..FetchConfig::default()
    };
    f(&mut config);
    Fetcher::new(config).expect("fetcher")
}

pub(super) fn fetcher(allow: &str) -> Fetcher {
    fetcher_with(allow, |_| {})
}

/// Lets a connection that should not have happened reach the accept loop.
pub(super) async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}
