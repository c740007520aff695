//! A minimal libpq-17-style Postgres client over verified TLS (to
//! exercise what psql 15 cannot, e.g. cancel requests sent inside TLS),
//! a plain one for direct connections, and a gateway whose CA is known.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use super::World;

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

pub fn connect(port: u16, ca: &std::path::Path) -> Tls {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"S");
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = "localhost".try_into().unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    rustls::StreamOwned::new(connection, tcp)
}

pub fn send(stream: &mut impl Write, bytes: &[u8]) {
    stream.write_all(bytes).unwrap();
    stream.flush().unwrap();
}

pub fn read(stream: &mut impl Read) -> (u8, Vec<u8>) {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).unwrap();
    let length = i32::from_be_bytes(header[1..].try_into().unwrap()) as usize;
    let mut body = vec![0u8; length - 4];
    stream.read_exact(&mut body).unwrap();
    (header[0], body)
}

/// Logs in; returns the (process id, secret) the gateway handed out.
pub fn login(stream: &mut Tls, user: &str, database: &str, password: &str) -> (i32, i32) {
    let mut out = BytesMut::new();
    frontend::startup_message([("user", user), ("database", database)], &mut out).unwrap();
    send(stream, &out);
    let (tag, body) = read(stream);
    assert_eq!((tag, &body[..]), (b'R', &3i32.to_be_bytes()[..]));
    let mut out = BytesMut::new();
    frontend::password_message(password.as_bytes(), &mut out).unwrap();
    send(stream, &out);
    let mut key = None;
    loop {
        match read(stream) {
            (b'K', body) => {
                key = Some((
                    i32::from_be_bytes(body[..4].try_into().unwrap()),
                    i32::from_be_bytes(body[4..].try_into().unwrap()),
                ))
            }
            (b'Z', _) => return key.expect("BackendKeyData before ReadyForQuery"),
            (b'E', body) => panic!("login refused: {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
}

/// Whether a TLS handshake with the gateway succeeds, trusting `ca`.
pub fn handshake(port: u16, ca: &std::path::Path) -> Result<(), String> {
    let mut tls = connect(port, ca);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Reads until the gateway closes the connection, which it must do
/// cleanly (TLS close_notify): libpq 17+ reports a cancel answered by
/// a bare TCP close as failed.
pub fn read_to_clean_close(stream: &mut Tls) {
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("the gateway closes the connection with close_notify");
    assert!(rest.is_empty(), "a cancel request gets no answer: {rest:?}");
}

/// Runs a query; returns the first column of the first row, or the
/// error's SQLSTATE as `ERROR <code>`.
pub fn query(stream: &mut Tls, sql: &str) -> String {
    let mut out = BytesMut::new();
    frontend::query(sql, &mut out).unwrap();
    send(stream, &out);
    let mut result = String::new();
    loop {
        match read(stream) {
            (b'D', body) if result.is_empty() => {
                let length = i32::from_be_bytes(body[2..6].try_into().unwrap()) as usize;
                result = String::from_utf8_lossy(&body[6..6 + length]).into_owned();
            }
            (b'E', body) => {
                let at = body.windows(1).position(|w| w == b"C").unwrap();
                result = format!("ERROR {}", String::from_utf8_lossy(&body[at + 1..at + 6]));
            }
            (b'Z', _) => return result,
            _ => {}
        }
    }
}

/// Logs in to PostgreSQL itself over plain TCP with SCRAM-SHA-256, as the
/// gateway does upstream.
pub fn login_direct(port: u16, user: &str, database: &str, password: &str) -> TcpStream {
    use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut out = BytesMut::new();
    frontend::startup_message([("user", user), ("database", database)], &mut out).unwrap();
    send(&mut tcp, &out);
    let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    loop {
        let (tag, body) = read(&mut tcp);
        let code = (tag == b'R').then(|| i32::from_be_bytes(body[..4].try_into().unwrap()));
        let mut out = BytesMut::new();
        match (tag, code) {
            (b'R', Some(10)) => {
                frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut out).unwrap();
            }
            (b'R', Some(11)) => {
                scram.update(&body[4..]).unwrap();
                frontend::sasl_response(scram.message(), &mut out).unwrap();
            }
            (b'R', Some(12)) => scram.finish(&body[4..]).unwrap(),
            (b'E', _) => panic!("direct login refused: {}", String::from_utf8_lossy(&body)),
            (b'Z', _) => return tcp,
            _ => {}
        }
        if !out.is_empty() {
            send(&mut tcp, &out);
        }
    }
}

/// A gateway whose Postgres certificate is signed by a CA the raw client
/// trusts (kept in the returned directory as `ca.crt`); `extra` is appended
/// to its config, after `[tls]`, with `{ca}` standing for the CA's path.
pub fn world_with_known_ca(extra: &str) -> (World, tempfile::TempDir) {
    let tls_dir = tempfile::tempdir().unwrap();
    let names = ["localhost".to_string()];
    let (ca, server) = jitgate::postgres::tls::generate::ca_and_server(&names).unwrap();
    std::fs::write(tls_dir.path().join("ca.crt"), &ca.cert).unwrap();
    jitgate::postgres::tls::write_pair(
        &server,
        &tls_dir.path().join("server.crt"),
        &tls_dir.path().join("server.key"),
    )
    .unwrap();
    let cert_dir = tls_dir.path().display().to_string();
    let extra = extra.replace("{ca}", &format!("{cert_dir}/ca.crt"));
    let world = World::with_pg_target(&[], move |text| {
        format!(
            "{text}\n[tls]\ncert = \"{cert_dir}/server.crt\"\nkey = \"{cert_dir}/server.key\"\n{extra}"
        )
    });
    (world, tls_dir)
}
