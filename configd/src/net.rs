//! Connections between config daemons: TCP, with rustls TLS when the config gives a CA, told apart by their first byte.
//!
//! The CA comes from `[configd.tls] ca` in the config; each box's certificate and key
//! from its `tls_cert` and `tls_key` paths. A box's certificate must name
//! `configd.<box>.<network.zone>`, which is what a client checks. A daemon that has a
//! certificate answers TLS (and plain TCP) on the same port, asks the peer for a client
//! certificate and notes whether it got one that the CA issued.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use popnet_config::{Config, TlsMode};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("configd.tls.ca: {0}; paste the CA certificate in PEM")]
    Ca(String),
    #[error(
        "cannot read {path} ({what} of box {name}): {reason}; fix tls_cert / tls_key of configd.boxes {name:?} or the file"
    )]
    File {
        name: String,
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("box {name}: {reason}")]
    Setup { name: String, reason: String },
}

/// The TLS side of one box (or of popctl, which has no certificate).
pub struct Tls {
    pub mode: TlsMode,
    zone: String,
    client: Arc<ClientConfig>,
    server: Option<Arc<ServerConfig>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_chain(name: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::File {
        name: name.to_string(),
        what: "certificate",
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".to_string()));
    }
    Ok(certs)
}

fn read_key(name: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        name: name.to_string(),
        what: "private key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

impl Tls {
    /// The TLS settings of box `me` (or of a client without a certificate when `me` is
    /// none or has none) under `cfg`; none when the config has no `[configd.tls]`.
    pub fn from_config(cfg: &Config, me: Option<&str>) -> Result<Option<Tls>, TlsError> {
        let Some(d) = &cfg.configd else {
            return Ok(None);
        };
        let Some(t) = &d.tls else {
            return Ok(None);
        };
        let mut roots = RootCertStore::empty();
        let mut n = 0;
        for c in CertificateDer::pem_slice_iter(t.ca.as_bytes()) {
            let c = c.map_err(|e| TlsError::Ca(e.to_string()))?;
            roots.add(c).map_err(|e| TlsError::Ca(e.to_string()))?;
            n += 1;
        }
        if n == 0 {
            return Err(TlsError::Ca("no PEM certificate found".to_string()));
        }
        let roots = Arc::new(roots);
        let name = me.unwrap_or("popctl");
        let setup = |reason: String| TlsError::Setup {
            name: name.to_string(),
            reason,
        };
        let own = match me.and_then(|m| d.get(m)) {
            Some(b) => match (&b.tls_cert, &b.tls_key) {
                (Some(c), Some(k)) => Some((read_chain(name, c)?, read_key(name, k)?)),
                _ => None,
            },
            None => None,
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(e.to_string()))?
            .with_root_certificates(roots.clone());
        let client = match &own {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| setup(format!("its certificate and key do not fit ({e})")))?,
            None => builder.with_no_client_auth(),
        };
        let server = match own {
            Some((chain, key)) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| setup(e.to_string()))?;
                let sc = ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| setup(e.to_string()))?
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain, key)
                    .map_err(|e| setup(format!("its certificate and key do not fit ({e})")))?;
                Some(Arc::new(sc))
            }
            None => None,
        };
        Ok(Some(Tls {
            mode: t.mode,
            zone: cfg.network.zone.trim_end_matches('.').to_string(),
            client: Arc::new(client),
            server,
        }))
    }

    /// True if this box can answer TLS.
    pub fn serves(&self) -> bool {
        self.server.is_some()
    }
}

/// A connection to or from a config daemon.
pub enum Stream {
    Plain(TcpStream),
    Client(Box<rustls::StreamOwned<ClientConnection, TcpStream>>),
    Server(Box<rustls::StreamOwned<ServerConnection, TcpStream>>),
}

impl Stream {
    /// True if the peer proved, with a certificate the CA issued, that it is a box of
    /// the network (server side of a TLS connection).
    pub fn peer_is_box(&self) -> bool {
        match self {
            Stream::Server(s) => s.conn.peer_certificates().is_some_and(|c| !c.is_empty()),
            _ => false,
        }
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Client(s) => &s.sock,
            Stream::Server(s) => &s.sock,
        }
    }

    /// Sets the read and write timeouts of the underlying socket.
    pub fn set_timeout(&self, t: Duration) -> io::Result<()> {
        let t = t.max(Duration::from_millis(1));
        self.tcp().set_read_timeout(Some(t))?;
        self.tcp().set_write_timeout(Some(t))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Client(s) => s.read(buf),
            Stream::Server(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Client(s) => s.write(buf),
            Stream::Server(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Client(s) => s.flush(),
            Stream::Server(s) => s.flush(),
        }
    }
}

/// Connects to the configd of box `name` at `addr`: TLS when `tls` says to connect
/// with it (mode `require`), plain TCP otherwise. `timeout` bounds the connect and
/// every later read and write.
pub fn connect(
    addr: SocketAddr,
    name: &str,
    tls: Option<&Tls>,
    timeout: Duration,
) -> io::Result<Stream> {
    let tcp = TcpStream::connect_timeout(&addr, timeout.max(Duration::from_millis(1)))?;
    tcp.set_nodelay(true)?;
    let stream = match tls.filter(|t| t.mode == TlsMode::Require) {
        Some(t) => {
            let sni = ServerName::try_from(format!("configd.{name}.{}", t.zone))
                .map_err(|e| io::Error::other(format!("box name {name:?}: {e}")))?;
            let conn = ClientConnection::new(t.client.clone(), sni)
                .map_err(|e| io::Error::other(e.to_string()))?;
            Stream::Client(Box::new(rustls::StreamOwned::new(conn, tcp)))
        }
        None => Stream::Plain(tcp),
    };
    stream.set_timeout(timeout)?;
    Ok(stream)
}

/// Takes an accepted connection: TLS if its first byte starts a handshake (and this box
/// has a certificate), plain TCP otherwise. The handshake is completed here.
pub fn accept(tcp: TcpStream, tls: Option<&Tls>, timeout: Duration) -> io::Result<Stream> {
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first)?;
    if n == 0 || first[0] != TLS_HANDSHAKE {
        return Ok(Stream::Plain(tcp));
    }
    let Some(server) = tls.and_then(|t| t.server.clone()) else {
        return Err(io::Error::other(
            "a TLS connection, but this box has no certificate (its running config has no [configd.tls] or no tls_cert for it)",
        ));
    };
    let mut conn = ServerConnection::new(server).map_err(|e| io::Error::other(e.to_string()))?;
    let mut tcp = tcp;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(Stream::Server(Box::new(rustls::StreamOwned::new(
        conn, tcp,
    ))))
}
