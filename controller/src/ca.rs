//! The controller's own certificate authority: made on first start, kept in the state
//! directory (the key 0600). It signs the controller's server certificate and, at enrollment,
//! one client certificate per host, bound to the host id the controller assigns.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate authority: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0}")]
    Pem(String),
}

/// The CA, with the server identity it issued.
pub struct Authority {
    key: KeyPair,
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key: PrivateKeyDer<'static>,
}

pub use sensor_common::protocol::{fingerprint, hex};

fn write_private(path: &Path, text: &str) -> Result<(), CaError> {
    sensor_common::protocol::save_private(path, text).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The first certificate of a PEM text, as DER.
pub fn pem_to_der(pem: &str) -> Result<CertificateDer<'static>, CaError> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| CaError::Pem(format!("not a PEM certificate: {e:?}")))
}

/// The calendar year now (close enough for a validity bound).
fn this_year() -> i32 {
    let secs = crate::now_ns() / 1_000_000_000;
    1970 + i32::try_from(secs / 31_556_952).unwrap_or(0)
}

impl Authority {
    /// Loads the CA from `dir`, or makes it (and the server certificate) on first start.
    pub fn open(dir: &Path) -> Result<Self, CaError> {
        let (key_path, cert_path) = (dir.join("ca.key"), dir.join("ca.pem"));
        if key_path.exists() && cert_path.exists() {
            return Self::from_pem(&read(&cert_path)?, &read(&key_path)?);
        }
        let (cert_pem, key_pem) = Self::generate()?;
        write_private(&key_path, &key_pem)?;
        write_private(&cert_path, &cert_pem)?;
        tracing::info!(path = %cert_path.display(), "certificate authority created");
        Self::from_pem(&cert_pem, &key_pem)
    }

    /// A new CA: its certificate and its key, as PEM.
    pub fn generate() -> Result<(String, String), CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Vigil controller CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The CA of this certificate and key (PEM), with a new server certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_pem = cert_pem.to_owned();
        let cert_der = pem_to_der(&cert_pem)?;
        let (server_chain, server_key) = {
            let issuer = Issuer::from_ca_cert_pem(&cert_pem, &key)?;
            let server_key = KeyPair::generate()?;
            let mut params =
                CertificateParams::new(vec![sensor_common::protocol::SERVER_NAME.to_owned()])?;
            params
                .distinguished_name
                .push(DnType::CommonName, sensor_common::protocol::SERVER_NAME);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let cert = params.signed_by(&server_key, &issuer)?;
            (
                vec![cert.der().clone(), cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
        };
        Ok(Self {
            key,
            cert_pem,
            cert_der,
            server_chain,
            server_key,
        })
    }

    /// A certificate for the console's HTTPS server, for these DNS names and addresses,
    /// signed by this CA (browsers and the CLI trust it by trusting `ca.pem`).
    pub fn console_identity(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Vigil console");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_after = rcgen::date_time_ymd(this_year() + 1, 1, 1);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((
            vec![cert.der().clone(), self.cert_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ))
    }

    /// The CA's fingerprint, which enrollment tokens carry.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// Issues the client certificate of `host_id` for the key of a signing request (whose
    /// signature is checked). The names come from the controller, not from the request.
    pub fn issue(&self, host_id: &str, hostname: &str, csr_der: &[u8]) -> Result<String, CaError> {
        let csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, host_id);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, hostname);
        params.subject_alt_names = vec![SanType::DnsName(
            format!("{host_id}.hosts.vigil").try_into()?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_after = rcgen::date_time_ymd(this_year() + 2, 1, 1);
        let cert = params.signed_by(&csr.public_key, &issuer)?;
        Ok(cert.pem())
    }
}
