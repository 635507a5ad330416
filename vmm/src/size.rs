//! Memory sizes as users write them: `512` (MiB), `512M`, `2G`, `1GiB`, `65536K`.

use std::fmt;
use std::str::FromStr;

/// A guest memory size, held in bytes, always a whole number of MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySize(u64);

const MIB: u64 = 1 << 20;

impl MemorySize {
    pub fn from_mib(mib: u64) -> Self {
        MemorySize(mib * MIB)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    pub fn mib(self) -> u64 {
        self.0 / MIB
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} MiB", self.mib())
    }
}

impl FromStr for MemorySize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || format!("'{s}' is not a memory size (examples: 512M, 2G, 1024)");
        if num.is_empty() {
            return Err(bad());
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "m" | "mb" | "mib" => MIB,
            "k" | "kb" | "kib" => 1 << 10,
            "g" | "gb" | "gib" => 1 << 30,
            _ => return Err(bad()),
        };
        let bytes = n
            .checked_mul(mult)
            .ok_or_else(|| format!("'{s}' is too large"))?;
        if bytes % MIB != 0 {
            return Err(format!("'{s}' is not a whole number of MiB"));
        }
        Ok(MemorySize(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!("512".parse::<MemorySize>().unwrap().mib(), 512);
        assert_eq!("512M".parse::<MemorySize>().unwrap().mib(), 512);
        assert_eq!("2G".parse::<MemorySize>().unwrap().mib(), 2048);
        assert_eq!("1GiB".parse::<MemorySize>().unwrap().mib(), 1024);
        assert_eq!("65536K".parse::<MemorySize>().unwrap().mib(), 64);
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "M",
            "12Q",
            "1.5G",
            "-1",
            "100K",
            "99999999999999999999G",
        ] {
            assert!(s.parse::<MemorySize>().is_err(), "{s}");
        }
    }
}
