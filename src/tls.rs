//! TLS for every HTTP client of the process (downloads and webhooks, the CLI's client,
//! S3): rustls with `ring` as the process' crypto provider.
//!
//! reqwest's and object_store's own rustls features bring aws-lc-rs, the same crypto
//! built from C by a build script that took ~45 s of a cold build on two cores; `ring`
//! (already in the tree for sqlx's TLS) builds in a few. With reqwest's
//! `rustls-no-provider`, a client built before a provider is installed panics, so every
//! place that builds one calls [`use_ring`] first.

use std::sync::Once;

/// Installs `ring` as the process' rustls crypto provider, once.
pub fn use_ring() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An error means a provider is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use tokio::{io::AsyncReadExt, net::TcpListener};

    /// A client built after `use_ring` speaks TLS: its first bytes to an `https` URL
    /// are a TLS handshake record (a client without a provider panics when built).
    #[tokio::test]
    async fn clients_speak_tls_with_the_installed_provider() {
        super::use_ring();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}/",
            listener.local_addr().unwrap().port()
        );
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 3];
            socket.read_exact(&mut head).await.unwrap();
            head
        });
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let sent = client.get(&url).send().await;
        let head = server.await.unwrap();
        // Record type 22 (handshake), protocol version 3.x.
        assert_eq!(head[..2], [22, 3], "not a TLS record: {head:?}");
        assert!(sent.is_err(), "no server finished the handshake");
    }
}
