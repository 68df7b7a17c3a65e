//! Certificates the tests make (rcgen): a CA, a server certificate for localhost and
//! 127.0.0.1, and a client certificate.

use std::path::Path;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`.
pub struct Pki {
    pub ca: String,
    pub client_cert: String,
    pub client_key: String,
}

impl Pki {
    /// Makes them; the files are `ca.pem`, `server.pem` and `server.key`.
    pub fn make(dir: &Path) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let ca = {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name
                .push(DnType::CommonName, "sensor test CA");
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
        };
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.extended_key_usages = vec![usage];
            (p.signed_by(&key, &ca).unwrap().pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            vec!["sensor-client".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        for (name, pem) in [
            ("ca.pem", ca.pem()),
            ("server.pem", server_cert),
            ("server.key", server_key),
        ] {
            std::fs::write(dir.join(name), pem).unwrap();
        }
        Pki {
            ca: ca.pem(),
            client_cert,
            client_key,
        }
    }
}
