//! A simulated sensor's enrollment and TLS, as the real sensor does them, for the fleet
//! benchmark and for end-to-end tests that need more hosts than one kernel can run sensors
//! for. Each includes this file by path (`#[path = ...] mod sim;`).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use sensor_common::protocol::{
    ALPN_ENROLL, EnrollReply, EnrollRequest, EnrollToken, SERVER_NAME, read_frame, write_frame,
};

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A simulated host's identity, as enrollment gave it.
#[derive(Clone, Debug)]
pub struct Identity {
    pub host: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// TLS trusting the controller's CA, with or without a host identity, and the sensor's own
/// link timing: a keep-alive every 3 s, a silent peer given up after 10 s.
pub fn client_config(
    ca: &str,
    identity: Option<&Identity>,
    alpn: &[u8],
) -> Res<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.as_bytes())?)?;
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots);
    let mut cfg = match identity {
        Some(id) => b.with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(id.cert_pem.as_bytes())?],
            PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())?,
        )?,
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let mut client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(cfg)?,
    ));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(3)));
    transport.max_idle_timeout(Some(quinn::VarInt::from_u32(10_000).into()));
    client.transport_config(Arc::new(transport));
    Ok(client)
}

/// Enrolls one simulated host named `hostname` with `token`: a key of its own, a signing
/// request, the certificate the controller issues.
pub async fn enroll(
    ep: &quinn::Endpoint,
    addr: SocketAddr,
    ca: &str,
    token: &EnrollToken,
    hostname: &str,
) -> Res<Identity> {
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?.serialize_request(&key)?;
    let conn = ep
        .connect_with(client_config(ca, None, ALPN_ENROLL)?, addr, SERVER_NAME)?
        .await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let req = EnrollRequest {
        token_id: token.id.clone(),
        secret: token.secret.clone(),
        hostname: hostname.to_owned(),
        csr_der: csr.der().to_vec(),
    };
    write_frame(&mut send, &req).await?;
    let _ = send.finish();
    match read_frame::<EnrollReply, _>(&mut recv).await? {
        Some(EnrollReply::Enrolled {
            host_id, cert_pem, ..
        }) => Ok(Identity {
            host: host_id,
            cert_pem,
            key_pem: key.serialize_pem(),
        }),
        other => Err(format!("enrollment of {hostname}: {other:?}").into()),
    }
}
