//! sha256 content digests, and readers that compute them as bytes stream past.

use std::{
    fmt,
    io::{self, Read, Write},
    str::FromStr,
};

use locald_core::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A `sha256:<64 hex>` content digest, the only algorithm locald stores by.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Digest> {
        let reject = |reason: &str| Error::invalid("digest", s, reason);
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| reject("expected sha256:<hex>"))?;
        if algo != "sha256" {
            return Err(reject("only sha256 digests are supported"));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(reject("expected 64 lowercase hex characters"));
        }
        Ok(Digest(hex.to_owned()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(hex::encode(Sha256::digest(bytes)))
    }

    fn from_hasher(hasher: Sha256) -> Digest {
        Digest(hex::encode(hasher.finalize()))
    }

    /// The 64 hex characters.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The first 12 hex characters, as docker shows ids.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Hashes and counts the bytes read through it, optionally copying them to a writer.
pub(crate) struct HashingReader<R, W = io::Sink> {
    inner: R,
    hasher: Sha256,
    count: u64,
    tee: Option<W>,
}

impl<R: Read> HashingReader<R, io::Sink> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            tee: None,
        }
    }
}

impl<R: Read, W: Write> HashingReader<R, W> {
    pub(crate) fn with_tee(inner: R, tee: W) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            tee: Some(tee),
        }
    }

    /// Reads and hashes whatever is left.
    pub(crate) fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }

    /// The digest and byte count of everything read, and the tee.
    pub(crate) fn finish(self) -> (Digest, u64, Option<W>) {
        (Digest::from_hasher(self.hasher), self.count, self.tee)
    }
}

impl<R: Read, W: Write> Read for HashingReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if let Some(tee) = &mut self.tee {
            tee.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let hex = "a".repeat(64);
        let d = Digest::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(d.to_string(), format!("sha256:{hex}"));
        assert_eq!(d.short(), &hex[..12]);
        for bad in [
            "",
            "sha256:",
            "sha512:abc",
            "sha256:ABC",
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashing_reader_matches_one_shot() {
        let data = b"hello world".repeat(1000);
        let mut tee = Vec::new();
        let mut r = HashingReader::with_tee(&data[..], &mut tee);
        let mut first = [0u8; 100];
        r.read_exact(&mut first).unwrap();
        r.drain().unwrap();
        let (digest, count, _) = r.finish();
        assert_eq!(digest, Digest::of(&data));
        assert_eq!(count, data.len() as u64);
        assert_eq!(tee, data);
    }
}
