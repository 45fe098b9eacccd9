//! The fallback certificate: self-signed at start-up, served when a terminated host has no
//! certificate of its own and no default certificate is configured.
//!
//! It names no host (no SANs, a fixed common name), so it can never tell a client which hosts
//! this proxy serves.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::table::certificates::{Certificate, CertificateInfo};

/// Common name of the fallback certificate.
const COMMON_NAME: &str = "Portcullis default certificate";

/// How long the fallback certificate is valid (it is regenerated at every start).
const VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why the fallback certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SelfSignedError {
    #[error("generating the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("loading the self-signed key into rustls: {0}")]
    Key(#[from] rustls::Error),
}

/// Generates a fresh self-signed certificate (ECDSA P-256), valid from one day ago for a year.
pub fn generate() -> Result<Certificate, SelfSignedError> {
    let key_pair = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, COMMON_NAME);
    params.distinguished_name = name;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let day = 24 * 3600;
    let (by, bm, bd) = civil_from_days((now / day).saturating_sub(1) as i64);
    let (ay, am, ad) = civil_from_days(((now + VALIDITY.as_secs()) / day) as i64);
    params.not_before = rcgen::date_time_ymd(by, bm, bd);
    params.not_after = rcgen::date_time_ymd(ay, am, ad);

    let cert = params.self_signed(&key_pair)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let signing_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key_der)?;
    let certified = CertifiedKey::new(vec![cert.der().clone()], signing_key);

    Ok(Certificate {
        key: Arc::new(certified),
        info: CertificateInfo {
            subject: format!("CN={COMMON_NAME}"),
            dns_names: Vec::new(),
            not_after: format!("{ay:04}-{am:02}-{ad:02}T00:00:00Z"),
            source: "self-signed".to_string(),
        },
    })
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m as u8, d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn names_no_host() {
        let cert = generate().expect("self-signed certificate");
        assert!(cert.info.dns_names.is_empty());
        assert_eq!(cert.key.cert.len(), 1);
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.key.cert[0].as_ref())
            .expect("parse generated certificate");
        assert!(
            parsed
                .subject_alternative_name()
                .expect("extensions")
                .is_none()
        );
        assert_eq!(parsed.subject().to_string(), format!("CN={COMMON_NAME}"));
        assert!(cert.key.keys_match().is_ok());
    }
}
