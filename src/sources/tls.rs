//! TLS for the wire readers (`mysql/wire.rs`, `postgres/wire.rs`), with the driver's rules,
//! so a sweep's connection is exactly as trusted as the pool's: MySQL's `preferred` and
//! `required`, PostgreSQL's `prefer` and `require`, encrypt without checking the certificate;
//! `verify_ca` / `verify-ca` checks it against the roots (the URL's CA file, else the webpki
//! roots the driver uses) but not its name; `verify_identity` / `verify-full` checks both. A
//! client certificate is presented when the URL names one. On ring, as sqlx's own TLS.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};

/// What of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verify {
    /// Nothing but the handshake's signatures.
    Nothing,
    /// That its chain leads to a root.
    Chain,
    /// Its chain, and that it names the host.
    ChainAndName,
}

/// The files a URL names: the roots to check the server against, the client's certificate
/// and key; each with the URL parameter's name, for errors.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Files<'a> {
    pub ca: Option<(&'a Path, &'static str)>,
    pub cert: Option<(&'a Path, &'static str)>,
    pub key: Option<(&'a Path, &'static str)>,
}

pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The client configuration, or why it cannot be built (a file that cannot be read, a
/// certificate without its key).
pub(super) fn client_config(verify: Verify, files: Files<'_>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let client = match (files.cert, files.key) {
        (Some((cert, cert_name)), Some((key, key_name))) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read {cert_name} {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read {key_name} {}: {e}", key.display()))?;
            Some((chain, key))
        }
        (None, None) => None,
        (Some((_, cert)), None) | (None, Some((_, cert))) => {
            return Err(format!(
                "{cert}: a client certificate and its key must be given together"
            ));
        }
    };
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        Verify::Chain | Verify::ChainAndName => {
            let mut roots =
                RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some((ca, name)) = files.ca {
                let certs = CertificateDer::pem_file_iter(ca)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("cannot read {name} {}: {e}", ca.display()))?;
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{name} {}: {e}", ca.display()))?;
                }
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| e.to_string())?;
            if verify == Verify::ChainAndName {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            }
        }
        Verify::Nothing => Arc::new(Unchecked(provider)),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string()),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The connection `plain`, after the protocol's request for TLS was granted, encrypted as
/// `config` says, checking the certificate against `host`.
pub(super) async fn upgrade(
    plain: Box<dyn Io>,
    config: ClientConfig,
    host: &str,
) -> Result<Box<dyn Io>, String> {
    let name = server_name(host)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tls = connector
        .connect(name, plain)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Box::new(tls))
}

/// The name to check the server's certificate against: the URL's host.
fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("host {host}: {e}"))
}

/// `preferred` and `required`: any certificate, its handshake signatures still checked.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify_ca`: the chain must lead to a root; the name is not checked.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
