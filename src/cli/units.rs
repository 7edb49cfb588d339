//! Byte counts for people: `256 MiB` in, `255.9 MiB` out.

/// Formats a byte count with a binary unit (`0 B`, `64.0 KiB`, `1.5 GiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Reads a byte count: a number (decimal or `0x` hex) with an optional
/// unit, `K`/`KB`/`KiB`, `M…`, `G…`, `T…` (all binary), e.g. `256MiB`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| c.is_ascii_alphabetic() && !t.starts_with("0x"))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number = number.trim();
    let value = match number.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => number.parse::<u64>().ok(),
    }
    .ok_or_else(|| format!("`{text}` is not a byte count (say 256MiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("`{text}`: unknown unit `{}`", unit.trim())),
    };
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("0x10000"), Ok(0x10000));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(64 << 10), "64.0 KiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
    }
}
