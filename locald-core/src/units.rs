//! Parsers for the sizes and quantities people type: `512m`, `1.5` cpus.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A size in bytes, parsed as docker parses `--memory`: a number with an optional
/// binary unit `b`, `k`, `m`, `g`, `t`, `p` (any case, optionally followed by `b`
/// or `ib`): `512m`, `1.5g`, `64MiB`, `1048576`.
///
/// ```
/// use locald_core::ByteSize;
///
/// assert_eq!("512m".parse::<ByteSize>()?.bytes(), 512 * 1024 * 1024);
/// assert_eq!("1.5GiB".parse::<ByteSize>()?.bytes(), 3 * 512 * 1024 * 1024);
/// assert!("12 parsecs".parse::<ByteSize>().is_err());
/// # Ok::<(), locald_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ByteSize(u64);

impl ByteSize {
    /// A size of `bytes` bytes.
    pub const fn new(bytes: u64) -> Self {
        ByteSize(bytes)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = Error;

    fn from_str(input: &str) -> Result<ByteSize> {
        let reject = |reason: &str| Error::invalid("size", input, reason);
        let s = input.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        if number.is_empty() {
            return Err(reject("expected a number such as 512m or 2g"));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| reject("expected a number such as 512m or 2g"))?;
        let unit = unit.trim().to_ascii_lowercase();
        let unit = unit
            .strip_suffix("ib")
            .or_else(|| unit.strip_suffix('b'))
            .unwrap_or(&unit);
        let shift = match unit {
            "" => 0,
            "k" => 10,
            "m" => 20,
            "g" => 30,
            "t" => 40,
            "p" => 50,
            _ => return Err(reject("unknown unit; use b, k, m, g, t or p")),
        };
        let bytes = value * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(reject("too large"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 5] = [("p", 50), ("t", 40), ("g", 30), ("m", 20), ("k", 10)];
        for (unit, shift) in UNITS {
            let size = 1u64 << shift;
            if self.0 >= size && self.0 % size == 0 {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}b", self.0)
    }
}

/// A CPU quota in billionths of a CPU, parsed from a decimal like docker's `--cpus`:
/// `1.5` is one and a half CPUs.
///
/// ```
/// use locald_core::Cpus;
///
/// let cpus: Cpus = "1.5".parse()?;
/// assert_eq!(cpus.nano(), 1_500_000_000);
/// assert_eq!(cpus.quota_per_period(100_000), 150_000);
/// assert!("-1".parse::<Cpus>().is_err());
/// # Ok::<(), locald_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cpus(u64);

impl Cpus {
    /// The most CPUs a limit may name.
    pub const MAX: u64 = 1024;

    /// A quota of `nano` billionths of a CPU.
    pub fn from_nano(nano: u64) -> Result<Cpus> {
        if nano == 0 || nano > Self::MAX * 1_000_000_000 {
            return Err(Error::invalid(
                "cpus",
                format!("{}", nano as f64 / 1e9),
                format!("must be more than 0 and at most {}", Self::MAX),
            ));
        }
        Ok(Cpus(nano))
    }

    /// Billionths of a CPU.
    pub fn nano(self) -> u64 {
        self.0
    }

    /// The CFS quota for a period of `period_us` microseconds.
    pub fn quota_per_period(self, period_us: u64) -> u64 {
        ((self.0 as u128 * period_us as u128) / 1_000_000_000) as u64
    }
}

impl FromStr for Cpus {
    type Err = Error;

    fn from_str(input: &str) -> Result<Cpus> {
        let value: f64 = input.trim().parse().map_err(|_| {
            Error::invalid(
                "cpus",
                input,
                "expected a decimal number of CPUs such as 0.5 or 2",
            )
        })?;
        if !value.is_finite() || value <= 0.0 || value > Self::MAX as f64 {
            return Err(Error::invalid(
                "cpus",
                input,
                format!("must be more than 0 and at most {}", Self::MAX),
            ));
        }
        Cpus::from_nano((value * 1e9).round() as u64)
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0 as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        let cases = [
            ("0", 0),
            ("1024", 1024),
            ("1b", 1),
            ("7k", 7 << 10),
            ("7K", 7 << 10),
            ("7kb", 7 << 10),
            ("512m", 512 << 20),
            ("512MiB", 512 << 20),
            ("512 MB", 512 << 20),
            ("2g", 2 << 30),
            ("0.5g", 512 << 20),
            ("1t", 1 << 40),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<ByteSize>().unwrap().bytes(), want, "{input}");
        }
        for bad in [
            "",
            "m",
            "-5m",
            "1.2.3m",
            "5x",
            "5mbps",
            "1e3",
            "99999999999p",
        ] {
            let err = bad.parse::<ByteSize>().unwrap_err();
            assert!(err.to_string().starts_with("invalid size"), "{bad}: {err}");
        }
    }

    #[test]
    fn byte_size_display_round_trips() {
        for s in ["512m", "2g", "7k", "3b", "1t"] {
            assert_eq!(s.parse::<ByteSize>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn cpus() {
        assert_eq!("2".parse::<Cpus>().unwrap().nano(), 2_000_000_000);
        assert_eq!(
            "0.01".parse::<Cpus>().unwrap().quota_per_period(100_000),
            1_000
        );
        assert_eq!("1.5".parse::<Cpus>().unwrap().to_string(), "1.5");
        for bad in ["0", "-1", "abc", "NaN", "inf", "1025", ""] {
            assert!(bad.parse::<Cpus>().is_err(), "{bad}");
        }
    }
}
