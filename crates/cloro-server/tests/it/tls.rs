//! TLS with rustls: a certificate made at test time, a real handshake, and
//! both HTTP/1.1 and HTTP/2 chosen by ALPN.

use std::sync::Arc;

use bytes::Bytes;
use cloro_server::App;
use cloro_server::config::{Flags, Settings};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::ADMIN_TOKEN;

struct Files {
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    der: CertificateDer<'static>,
}

fn certificate() -> Files {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    Files {
        der: certified.cert.der().clone(),
        cert,
        key,
        _dir: dir,
    }
}

fn connector(trusted: &CertificateDer<'static>, alpn: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

fn healthz() -> Request<Empty<Bytes>> {
    Request::builder()
        .uri("https://localhost/healthz")
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn https_with_http1_and_h2_by_alpn() {
    let files = certificate();
    let data = tempfile::tempdir().unwrap();
    let flags = Flags {
        data_dir: Some(data.path().to_owned()),
        ..Flags::default()
    };
    let (app, _background) = App::build(Settings::from_toml(flags, "").unwrap(), Some(ADMIN_TOKEN))
        .await
        .unwrap();
    let acceptor = cloro_server::tls_acceptor(&files.cert, &files.key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cloro_server::serve(
        app,
        listener,
        Some(acceptor),
        async move {
            let _ = stopped.await;
        },
    ));
    let name = ServerName::try_from("localhost").unwrap();

    // HTTP/1.1 over TLS.
    let tls = connector(&files.der, b"http/1.1")
        .connect(name.clone(), TcpStream::connect(address).await.unwrap())
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(healthz()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_11);

    // HTTP/2 over TLS.
    let tls = connector(&files.der, b"h2")
        .connect(name, TcpStream::connect(address).await.unwrap())
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(healthz()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"status":"ok"}"#);

    // Plain HTTP to the TLS port gets no answer from the app.
    let plain = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>()
        .get(format!("http://{address}/healthz").parse().unwrap())
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != StatusCode::OK);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[test]
fn unusable_tls_files_name_the_file() {
    let files = certificate();
    let missing = files.cert.with_file_name("missing.pem");
    let error = cloro_server::tls_acceptor(&missing, &files.key)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("missing.pem"), "{error}");
    // A key that does not match the certificate is refused at start, not at the first handshake.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let wrong_key = files.cert.with_file_name("wrong.pem");
    std::fs::write(&wrong_key, other.signing_key.serialize_pem()).unwrap();
    let error = cloro_server::tls_acceptor(&files.cert, &wrong_key);
    assert!(error.is_err(), "a mismatched key must be refused");
}
