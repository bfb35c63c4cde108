//! The local image server: corpus photos from memory on 127.0.0.1, each under many
//! distinct URLs, with a latency chosen by the URL, logging when each URL was first
//! requested (the "fetch start" of the per-image latency).
//!
//! URL shape: `/lat/{ms}/{run}/{index}/{photo}`: waits `ms` milliseconds before
//! answering with `photo`; `run` and `index` only make the URL unique.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use poem::{
    EndpointExt, IntoResponse, Request, Response, Route, Server, handler,
    http::StatusCode,
    listener::{Acceptor, Listener, TcpListener},
    web::Data,
};

/// One corpus photo.
pub struct Photo {
    /// File name.
    pub name: String,
    /// Its bytes.
    pub bytes: bytes::Bytes,
    /// Width × height, in megapixels (from the JPEG header).
    pub megapixels: f64,
}

struct State {
    photos: HashMap<String, bytes::Bytes>,
    /// An 8×8 JPEG, served at `/tiny/…` (the queue section's real images).
    tiny: bytes::Bytes,
    first_arrival: Mutex<HashMap<String, Instant>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    requests: AtomicUsize,
}

/// Handle on the running server.
#[derive(Clone)]
pub struct ImageServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    state: Arc<State>,
}

struct InFlight<'a>(&'a State);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[handler]
async fn serve_photo(req: &Request, state: Data<&Arc<State>>) -> Response {
    let now = Instant::now();
    let path = req.uri().path().to_owned();
    state.requests.fetch_add(1, Ordering::Relaxed);
    let n = state.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    let _guard = InFlight(&state);
    state.max_in_flight.fetch_max(n, Ordering::Relaxed);
    state
        .first_arrival
        .lock()
        .expect("arrival log")
        .entry(path.clone())
        .or_insert(now);
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if parts.first() == Some(&"tiny") {
        return Response::builder()
            .content_type("image/jpeg")
            .body(state.tiny.clone());
    }
    let (Some(&"lat"), Some(ms), Some(name)) = (parts.first(), parts.get(1), parts.last()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(ms) = ms.parse::<u64>() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    match state.photos.get(*name) {
        Some(b) => Response::builder()
            .content_type("image/jpeg")
            .body(b.clone()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// An 8×8 gradient as a JPEG.
fn tiny_jpeg() -> anyhow::Result<bytes::Bytes> {
    let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 32, y as u8 * 32, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)?;
    Ok(out.into_inner().into())
}

impl ImageServer {
    /// Binds 127.0.0.1:0 and serves `photos` in the background.
    pub async fn start(photos: &[Photo]) -> anyhow::Result<Self> {
        let state = Arc::new(State {
            photos: photos
                .iter()
                .map(|p| (p.name.clone(), p.bytes.clone()))
                .collect(),
            tiny: tiny_jpeg()?,
            first_arrival: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
        });
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await?;
        let addr = *acceptor.local_addr()[0]
            .as_socket_addr()
            .ok_or_else(|| anyhow::anyhow!("image server has no TCP address"))?;
        let ep = Route::new().at("/*path", serve_photo).data(state.clone());
        tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(ep).await;
        });
        Ok(Self {
            base: format!("http://{addr}"),
            state,
        })
    }

    /// The URL of image `index` of run `run`, showing `photo` after `latency_ms`.
    pub fn url(&self, latency_ms: u64, run: &str, index: usize, photo: &str) -> String {
        format!("{}/lat/{latency_ms}/{run}/{index}/{photo}", self.base)
    }

    /// The URL of tiny image `index` of run `run` (an 8×8 JPEG, no latency).
    pub fn tiny_url(&self, run: &str, index: usize) -> String {
        format!("{}/tiny/{run}/{index}.jpg", self.base)
    }

    /// When `url` (absolute, on this server) was first requested.
    pub fn first_arrival(&self, url: &str) -> Option<Instant> {
        let path = url.strip_prefix(&self.base)?;
        self.state
            .first_arrival
            .lock()
            .expect("arrival log")
            .get(path)
            .copied()
    }

    /// Resets the concurrency high-water mark and the request count.
    pub fn reset_counters(&self) {
        self.state.max_in_flight.store(0, Ordering::Relaxed);
        self.state.requests.store(0, Ordering::Relaxed);
    }

    /// Most requests in flight at once since the last reset.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::Relaxed)
    }

    /// Requests served since the last reset.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::Relaxed)
    }
}
