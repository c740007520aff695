//! `tls-server-end-point` channel binding data (RFC 5929 §4.1): the hash
//! of the server's certificate, with the hash function of its signature
//! (SHA-256 for MD5 and SHA-1), as PostgreSQL and libpq compute it.

use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The binding data of the certificate `der`, or None when its signature
/// names no single hash (Ed25519, RSA-PSS): then no client is offered
/// SCRAM-SHA-256-PLUS, as PostgreSQL does.
pub fn of(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let hash = match cert.signature_algorithm.algorithm.to_id_string().as_str() {
        // md5WithRSAEncryption, sha1WithRSAEncryption, sha256WithRSAEncryption,
        // ecdsa-with-SHA1, ecdsa-with-SHA256, dsa-with-sha1, dsa-with-sha256
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2"
        | "1.2.840.10040.4.3"
        | "2.16.840.1.101.3.4.3.2" => Sha256::digest(der).to_vec(),
        // sha384WithRSAEncryption, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => Sha384::digest(der).to_vec(),
        // sha512WithRSAEncryption, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => Sha512::digest(der).to_vec(),
        _ => return None,
    };
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
    };

    fn certificate(algorithm: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = KeyPair::generate_for(algorithm).unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_hash_follows_the_certificates_signature() {
        let p256 = certificate(&PKCS_ECDSA_P256_SHA256);
        assert_eq!(of(&p256), Some(Sha256::digest(&p256).to_vec()));
        let p384 = certificate(&PKCS_ECDSA_P384_SHA384);
        assert_eq!(of(&p384), Some(Sha384::digest(&p384).to_vec()));
    }

    #[test]
    fn a_signature_without_its_own_hash_or_garbage_gives_none() {
        assert_eq!(of(&certificate(&PKCS_ED25519)), None);
        assert_eq!(of(b"not a certificate"), None);
    }
}
