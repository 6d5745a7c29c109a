//! The host's identity with the controller: a key made here (it never leaves the host), the
//! certificate the controller issued for it at enrollment, and the controller's CA. Kept in
//! `STATE/identity/` (0700; files 0600).

use std::{
    net::SocketAddr,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use sensor_common::protocol::{
    EnrollReply, EnrollRequest, EnrollToken, SERVER_NAME, read_frame, write_frame,
};

use super::tls;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Bad { path: PathBuf, what: String },
    #[error("cannot make a key: {0}")]
    Key(#[from] rcgen::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("the controller at {addr} cannot be reached: {why}")]
    Unreachable { addr: SocketAddr, why: String },
    #[error("the controller refused the enrollment: {0}")]
    Refused(String),
}

#[derive(Clone, Debug)]
pub struct Identity {
    pub host_id: String,
    pub cert_pem: String,
    key_pem: String,
    pub ca_pem: String,
}

fn dir(state: &Path) -> PathBuf {
    state.join("identity")
}

fn write_private(path: &Path, text: &str) -> Result<(), IdentityError> {
    sensor_common::protocol::save_private(path, text).map_err(|source| IdentityError::Io {
        path: path.to_owned(),
        source,
    })
}

impl Identity {
    /// The identity saved under `state`, if the host has enrolled.
    pub fn load(state: &Path) -> Result<Option<Self>, IdentityError> {
        let d = dir(state);
        if !d.join("host_id").exists() {
            return Ok(None);
        }
        let read = |name: &str| {
            let path = d.join(name);
            std::fs::read_to_string(&path).map_err(|source| IdentityError::Io { path, source })
        };
        Ok(Some(Self {
            host_id: read("host_id")?.trim().to_owned(),
            cert_pem: read("cert.pem")?,
            key_pem: read("key.pem")?,
            ca_pem: read("ca.pem")?,
        }))
    }

    pub fn save(&self, state: &Path) -> Result<(), IdentityError> {
        let d = dir(state);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(|source| IdentityError::Io {
                path: d.clone(),
                source,
            })?;
        write_private(&d.join("key.pem"), &self.key_pem)?;
        write_private(&d.join("cert.pem"), &self.cert_pem)?;
        write_private(&d.join("ca.pem"), &self.ca_pem)?;
        // Last: its presence says the others are complete.
        write_private(&d.join("host_id"), &self.host_id)
    }

    /// The mutual-TLS client configuration of this identity.
    pub fn client_config(&self, state: &Path) -> Result<quinn::ClientConfig, IdentityError> {
        let d = dir(state);
        let bad = |name: &str, what: String| IdentityError::Bad {
            path: d.join(name),
            what,
        };
        let cert = CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| bad("cert.pem", format!("{e:?}")))?;
        let ca = CertificateDer::from_pem_slice(self.ca_pem.as_bytes())
            .map_err(|e| bad("ca.pem", format!("{e:?}")))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| bad("key.pem", format!("{e:?}")))?;
        Ok(tls::mutual(ca, cert, key)?)
    }
}

/// Trades a token for a certificate: a key is made here and only a signing request leaves.
pub async fn enroll(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    token: &EnrollToken,
    hostname: &str,
) -> Result<Identity, IdentityError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    let csr = params.serialize_request(&key)?;
    let unreachable = |why: String| IdentityError::Unreachable { addr, why };
    let conn = endpoint
        .connect_with(tls::enrollment(&token.ca_fingerprint)?, addr, SERVER_NAME)
        .map_err(|e| unreachable(e.to_string()))?
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let req = EnrollRequest {
        token_id: token.id.clone(),
        secret: token.secret.clone(),
        hostname: hostname.to_owned(),
        csr_der: csr.der().to_vec(),
    };
    write_frame(&mut send, &req)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = send.finish();
    let reply = read_frame::<EnrollReply, _>(&mut recv)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    conn.close(0u32.into(), b"enrolled");
    match reply {
        Some(EnrollReply::Enrolled {
            host_id,
            cert_pem,
            ca_pem,
        }) => {
            let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
                .map_err(|e| IdentityError::Refused(format!("unreadable CA: {e:?}")))?;
            if tls::fingerprint(&ca) != token.ca_fingerprint {
                return Err(IdentityError::Refused(
                    "the CA sent is not the one the token names".into(),
                ));
            }
            Ok(Identity {
                host_id,
                cert_pem,
                key_pem: key.serialize_pem(),
                ca_pem,
            })
        }
        Some(EnrollReply::Refused { reason }) => Err(IdentityError::Refused(reason)),
        None => Err(IdentityError::Refused(
            "the controller closed the stream without an answer".into(),
        )),
    }
}
