//! HTTPS: the SDK and the CLI talk to the server over TLS, trusting a test
//! CA through the custom-root option; without it the handshake fails, and
//! that failure is not retried.

use std::path::PathBuf;

use cloro_client::cloro_auth_core::AccountId;
use cloro_client::cloro_auth_core::wire::CreateKeyRequest;
use cloro_client::{AdminToken, ClientBuilder, Error, TransportErrorKind};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::support::{ADMIN_TOKEN, Server, quick_retries};

/// A CA, and a server certificate it signed for 127.0.0.1 and localhost,
/// as PEM files.
struct Pki {
    _dir: tempfile::TempDir,
    ca_pem: String,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &*ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_pem = ca.pem();
    Pki {
        ca_file: write("ca.pem", &ca_pem),
        cert_file: write("server.pem", &server_cert.pem()),
        key_file: write("server-key.pem", &server_key.serialize_pem()),
        ca_pem,
        _dir: dir,
    }
}

#[tokio::test]
async fn https_with_a_custom_root() {
    let pki = pki();
    let acceptor = cloro_server::tls_acceptor(&pki.cert_file, &pki.key_file).unwrap();
    let server = Server::start_tls(acceptor).await;
    assert!(server.base_url.starts_with("https://127.0.0.1:"));

    let admin = server
        .builder()
        .add_root_certificates_pem(pki.ca_pem.clone())
        .admin_token(AdminToken::new(ADMIN_TOKEN).unwrap())
        .build_admin()
        .unwrap();
    let created = admin
        .create_key(&CreateKeyRequest::new(
            AccountId::new("acct_tls").unwrap(),
            "tls",
        ))
        .await
        .unwrap()
        .into_value();
    let client = server
        .builder()
        .add_root_certificates_pem(pki.ca_pem.clone())
        .api_key(created.key.clone())
        .build()
        .unwrap();
    assert_eq!(
        client.whoami().await.unwrap().value().id,
        created.key_info.id
    );

    // Only the test CA, no public roots: still fine.
    let strict = server
        .builder()
        .tls_roots(cloro_client::TlsRoots::CustomOnly)
        .add_root_certificates_pem(pki.ca_pem.clone())
        .api_key(created.key.clone())
        .build()
        .unwrap();
    assert!(strict.whoami().await.is_ok());

    // Without the CA the certificate is unknown: a TLS error, tried once.
    let untrusting = ClientBuilder::new()
        .base_url(&server.base_url)
        .retry_policy(quick_retries())
        .api_key(created.key.clone())
        .build()
        .unwrap();
    let error = untrusting.whoami().await.unwrap_err();
    let Error::Transport(transport) = &error else {
        panic!("not a transport error: {error:?}");
    };
    assert_eq!(transport.kind, TransportErrorKind::Tls, "{error}");
    assert_eq!(transport.attempts, 1);
    assert_eq!(error.label(), "TLS_ERROR");

    // The CLI, trusting the CA file.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloro"))
        .args(["--json", "plans"])
        .env_clear()
        .env("CLORO_BASE_URL", &server.base_url)
        .env("CLORO_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CLORO_CA_CERT", &pki.ca_file)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plans: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plans["default_plan"], "free");
}
