//! `X-Hub-Signature-256` (reference: Meta signs the raw body with
//! HMAC-SHA256 keyed by the app secret): checked against the exact bytes
//! received, in constant time, before anything parses them.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Why a delivery's signature was refused. Never carries the header's value
/// or any secret: the reason is logged and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No `X-Hub-Signature-256` header.
    Missing,
    /// Not `sha256=` followed by 64 hex digits.
    Malformed,
    /// Well-formed, but no configured app secret produced it.
    Mismatch,
}

impl Refused {
    /// The metric label and log word.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Mismatch => "mismatch",
        }
    }
}

/// The app secrets a delivery may be signed with: several apps can
/// subscribe to one WABA, and each signs with its own.
#[derive(Clone)]
pub struct Verifier {
    // Keyed once: a delivery costs one HMAC per secret, not a key setup.
    macs: Vec<Hmac<Sha256>>,
}

impl Verifier {
    /// A verifier for the comma-separated `secrets` (blanks skipped). `None`
    /// when there is none.
    pub fn new(secrets: &str) -> Option<Self> {
        let macs: Vec<Hmac<Sha256>> = secrets
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            // HMAC takes keys of any length.
            .filter_map(|s| Hmac::<Sha256>::new_from_slice(s.as_bytes()).ok())
            .collect();
        (!macs.is_empty()).then_some(Self { macs })
    }

    /// Checks `header` (the `X-Hub-Signature-256` value, if any) against
    /// `body`. Every secret is tried, whichever matches, so the time taken
    /// says nothing about which one did or how much of a digest matched.
    pub fn verify(&self, header: Option<&[u8]>, body: &[u8]) -> Result<(), Refused> {
        let header = header.ok_or(Refused::Missing)?;
        let digest = parse(header).ok_or(Refused::Malformed)?;
        let mut matched = subtle::Choice::from(0);
        for mac in &self.macs {
            let mut mac = mac.clone();
            mac.update(body);
            let computed = mac.finalize().into_bytes();
            matched |= subtle::ConstantTimeEq::ct_eq(computed.as_slice(), &digest[..]);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(Refused::Mismatch)
        }
    }
}

/// The 32 bytes of `sha256=<64 hex digits>`. Hex of either case is read:
/// the digest decides, not its spelling.
fn parse(header: &[u8]) -> Option<[u8; 32]> {
    let hex = header.strip_prefix(b"sha256=")?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex, &mut digest).ok()?;
    Some(digest)
}

/// `sha256=<hex>` of `body` under `secret`: what Meta would send. For the
/// simulator and tests.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length: this cannot fail.
    let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map(|mut mac| {
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    });
    format!("sha256={}", mac.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/webhook_status_failed_131031.json");
    const SIGNED: &str = "sha256=2d45e06e21d89f53153c7f147da175b185969a5db51666735083bac5145531a7";

    fn verifier(secrets: &str) -> Verifier {
        Verifier::new(secrets).expect("a secret")
    }

    #[test]
    fn the_fixture_verifies_with_its_secret_among_others() {
        assert_eq!(sign("test-app-secret", FIXTURE), SIGNED);
        assert_eq!(
            verifier("test-app-secret").verify(Some(SIGNED.as_bytes()), FIXTURE),
            Ok(())
        );
        let several = verifier("other-app, test-app-secret ,third");
        assert_eq!(several.verify(Some(SIGNED.as_bytes()), FIXTURE), Ok(()));
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        let v = verifier("test-app-secret");
        assert_eq!(v.verify(None, FIXTURE), Err(Refused::Missing));
        for malformed in [
            "",
            "sha256=",
            "sha1=3ccebf60094fc7a7996b470f77b3a889892caead",
            "sha256=zz",
            "SHA256=2d45",
        ] {
            assert_eq!(
                v.verify(Some(malformed.as_bytes()), FIXTURE),
                Err(Refused::Malformed),
                "{malformed}"
            );
        }
        let mut flipped = FIXTURE.to_vec();
        flipped[100] ^= 1;
        assert_eq!(
            v.verify(Some(SIGNED.as_bytes()), &flipped),
            Err(Refused::Mismatch)
        );
        // Made with the wrong secret, in upper-case hex.
        let wrong = "sha256=C5016C2114031632AC39A81C3CA7CDC3E8158A06E048FEE27F206D61EA99D247";
        assert_eq!(
            v.verify(Some(wrong.as_bytes()), FIXTURE),
            Err(Refused::Mismatch)
        );
        // The digest of the re-serialised JSON is not the raw body's.
        let reserialised =
            "sha256=7e8cf531c46d94438d0baff0b834cc71adb32aa68d76c10e43afa8562fff60fb";
        assert_eq!(
            v.verify(Some(reserialised.as_bytes()), FIXTURE),
            Err(Refused::Mismatch)
        );
        assert!(Verifier::new(" , ").is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_headers_and_bodies_never_panic(
            header in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
        ) {
            let v = verifier("test-app-secret");
            let _ = v.verify(Some(&header), &body);
            let signed = sign("test-app-secret", &body);
            proptest::prop_assert_eq!(v.verify(Some(signed.as_bytes()), &body), Ok(()));
        }
    }
}
