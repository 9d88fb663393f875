//! The TLS identity pgBackRest's own protocol uses between a backup job and
//! the instances: a CA of the cluster's and one certificate signed by it,
//! shown by both ends. Generated once, kept as one stored credential (so a
//! crash cannot leave a key without its certificate), mounted as three
//! Swarm secrets.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::conf::TLS_CLIENT;
use crate::reconcilers::postgres::render::instance_name;

/// The most instances a cluster has: the certificate names each.
const MAX_INSTANCES: usize = 9;

/// The three PEM parts of the identity.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The CA certificate both ends trust.
    pub ca: String,
    /// The certificate, CN [`TLS_CLIENT`], naming every instance.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// Why an identity could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused.
    #[error("making the backup TLS certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The stored bundle is not three PEM blocks.
    #[error("the stored backup TLS identity is damaged ({0})")]
    Damaged(&'static str),
}

/// A new identity for cluster `name`, as the bytes to store.
pub fn generate(name: &str) -> Result<Vec<u8>, CertError> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, format!("haswarm {name} backup CA"));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_after = rcgen::date_time_ymd(2125, 1, 1);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let names: Vec<String> = (0..MAX_INSTANCES).map(|i| instance_name(name, i)).collect();
    let mut leaf = CertificateParams::new(names)?;
    leaf.distinguished_name.push(DnType::CommonName, TLS_CLIENT);
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf.not_after = rcgen::date_time_ymd(2125, 1, 1);
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(format!(
        "{}{}{}",
        ca_cert.pem(),
        leaf_cert.pem(),
        leaf_key.serialize_pem()
    )
    .into_bytes())
}

/// The stored bundle's three parts.
pub fn split(stored: &[u8]) -> Result<TlsIdentity, CertError> {
    let text = std::str::from_utf8(stored).map_err(|_| CertError::Damaged("not text"))?;
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let from_start = &rest[start..];
        let end_marker = from_start
            .find("-----END ")
            .ok_or(CertError::Damaged("a block does not end"))?;
        let after = &from_start[end_marker..];
        let close = after
            .find("-----\n")
            .or_else(|| after.rfind("-----").map(|i| i.saturating_sub(1)))
            .ok_or(CertError::Damaged("a block does not end"))?;
        let len = end_marker + close + "-----\n".len();
        let block = from_start.get(..len).unwrap_or(from_start);
        blocks.push(block.trim_end().to_owned() + "\n");
        rest = from_start.get(len..).unwrap_or("");
    }
    match blocks.as_slice() {
        [ca, cert, key] => Ok(TlsIdentity {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => Err(CertError::Damaged("not three PEM blocks")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_identity_splits_into_ca_certificate_and_key() {
        let stored = generate("db").expect("generated");
        let id = split(&stored).expect("three blocks");
        assert!(
            id.ca.starts_with("-----BEGIN CERTIFICATE-----"),
            "{}",
            id.ca
        );
        assert!(id.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(id.key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(id.ca, id.cert);
        assert!(!format!("{id:?}").contains("PRIVATE"), "Debug shows no key");
        assert!(split(b"nothing").is_err());
        assert!(split(&stored[..stored.len() / 2]).is_err());
    }
}
