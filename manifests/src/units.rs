//! Akash quantity syntax: CPU units, byte sizes and prices.
//!
//! All parsing is exact (integer arithmetic, no floats) and rounds fractions down,
//! the way Akash truncates its float result.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Byte suffixes accepted for memory and storage sizes (Akash's `unitSuffixes`):
/// decimal `k`, `M`, `G`, `T`, `P`, `E` and binary `Ki` ... `Ei`. No suffix means bytes.
pub const BYTE_SUFFIXES: &[(&str, u64)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// Most fractional digits honoured in a size or CPU quantity; more cannot change the result.
const MAX_FRACTION_DIGITS: usize = 20;

/// A decimal split into its integer digits and fractional digits.
struct Decimal<'a> {
    whole: &'a str,
    fraction: &'a str,
}

fn split_decimal(text: &str) -> Option<Decimal<'_>> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (text, ""),
    };
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return None;
    }
    Some(Decimal { whole, fraction })
}

/// `decimal × scale`, rounded down; `None` on overflow of u128.
fn scale_decimal(decimal: &Decimal<'_>, scale: u128) -> Option<u128> {
    let whole: u128 = if decimal.whole.is_empty() {
        0
    } else {
        decimal.whole.parse().ok()?
    };
    let fraction_digits = &decimal.fraction[..decimal.fraction.len().min(MAX_FRACTION_DIGITS)];
    let mut fraction_part = 0u128;
    if !fraction_digits.is_empty() {
        let numerator: u128 = fraction_digits.parse().ok()?;
        let exponent = u32::try_from(fraction_digits.len()).ok()?;
        let denominator = 10u128.checked_pow(exponent)?;
        fraction_part = numerator.checked_mul(scale)? / denominator;
    }
    whole.checked_mul(scale)?.checked_add(fraction_part)
}

/// Why a quantity could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantityError {
    /// The value is below zero.
    Negative,
    /// The text is not a number with an allowed suffix.
    Format,
    /// The value does not fit in 64 bits.
    Overflow,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantityError::Negative => f.write_str("must not be negative"),
            QuantityError::Format => f.write_str("is not a valid quantity"),
            QuantityError::Overflow => f.write_str("is too large"),
        }
    }
}

fn reject_sign(text: &str) -> Result<&str, QuantityError> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(QuantityError::Negative);
    }
    Ok(text.strip_prefix('+').unwrap_or(text))
}

/// Parses CPU units into millicores: `"100m"` is 100, `0.5` and `"0.5"` are 500, `2` is 2000.
///
/// ```
/// assert_eq!(leasehold_manifests::parse_cpu_millis("250m"), Ok(250));
/// assert_eq!(leasehold_manifests::parse_cpu_millis("0.01"), Ok(10));
/// ```
pub fn parse_cpu_millis(text: &str) -> Result<u64, QuantityError> {
    let text = reject_sign(text)?;
    let millis = match text.strip_suffix('m') {
        Some(millis) if !millis.is_empty() && millis.bytes().all(|b| b.is_ascii_digit()) => millis
            .parse::<u128>()
            .map_err(|_| QuantityError::Overflow)?,
        Some(_) => return Err(QuantityError::Format),
        None => {
            let decimal = split_decimal(text).ok_or(QuantityError::Format)?;
            scale_decimal(&decimal, 1000).ok_or(QuantityError::Overflow)?
        }
    };
    u64::try_from(millis).map_err(|_| QuantityError::Overflow)
}

/// Parses a memory or storage size into bytes: `"512Mi"`, `"1.5Gi"`, `"10G"`, `"1024"`.
///
/// ```
/// assert_eq!(leasehold_manifests::parse_bytes("1Gi"), Ok(1 << 30));
/// assert_eq!(leasehold_manifests::parse_bytes("2k"), Ok(2000));
/// ```
pub fn parse_bytes(text: &str) -> Result<u64, QuantityError> {
    let text = reject_sign(text)?;
    let (number, unit) = BYTE_SUFFIXES
        .iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|number| (number, *unit)))
        .unwrap_or((text, 1));
    let decimal = split_decimal(number).ok_or(QuantityError::Format)?;
    let bytes = scale_decimal(&decimal, u128::from(unit)).ok_or(QuantityError::Overflow)?;
    u64::try_from(bytes).map_err(|_| QuantityError::Overflow)
}

/// Formats `bytes` in whole Gi (rounded down), the way Akash names GPU RAM in attribute keys.
pub fn format_gibibytes(bytes: u64) -> String {
    format!("{}Gi", bytes >> 30)
}

/// Number of fractional digits an [`Amount`] carries (as Cosmos `DecCoin`).
pub const AMOUNT_DECIMALS: u32 = 18;
const AMOUNT_SCALE: u128 = 10u128.pow(AMOUNT_DECIMALS);

/// A non-negative decimal price with 18 fractional digits, stored exactly.
///
/// Serialises as its shortest decimal string (`"1000"`, `"0.5"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount {
    atto: u128,
}

impl Amount {
    /// An amount of `units` whole token base units.
    pub fn from_units(units: u128) -> Option<Amount> {
        units.checked_mul(AMOUNT_SCALE).map(|atto| Amount { atto })
    }

    /// The amount in 10^-18 units.
    pub fn atto(&self) -> u128 {
        self.atto
    }

    /// Whole units, rounded down (token base units for on-chain prices).
    pub fn floor_units(&self) -> u128 {
        self.atto / AMOUNT_SCALE
    }

    /// Whole units, rounded up.
    pub fn ceil_units(&self) -> u128 {
        self.atto.div_ceil(AMOUNT_SCALE)
    }

    /// `self × factor`, `None` on overflow.
    pub fn checked_mul(&self, factor: u128) -> Option<Amount> {
        self.atto.checked_mul(factor).map(|atto| Amount { atto })
    }

    /// `self + other`, `None` on overflow.
    pub fn checked_add(&self, other: Amount) -> Option<Amount> {
        self.atto
            .checked_add(other.atto)
            .map(|atto| Amount { atto })
    }

    /// Akash's `DecCoin` text: always 18 fractional digits (`"1000.000000000000000000"`).
    pub fn to_dec_coin_string(&self) -> String {
        format!(
            "{}.{:018}",
            self.atto / AMOUNT_SCALE,
            self.atto % AMOUNT_SCALE
        )
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.atto / AMOUNT_SCALE;
        let fraction = self.atto % AMOUNT_SCALE;
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{fraction:018}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// Why an amount could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountError {
    /// Not a plain non-negative decimal such as `1000` or `0.25`.
    Format,
    /// More than 18 fractional digits.
    TooPrecise,
    /// Too large to represent.
    Overflow,
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmountError::Format => {
                f.write_str("must be a non-negative decimal number such as 1000 or 0.25")
            }
            AmountError::TooPrecise => f.write_str("has more than 18 fractional digits"),
            AmountError::Overflow => f.write_str("is too large"),
        }
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    fn from_str(text: &str) -> Result<Amount, AmountError> {
        let decimal = split_decimal(text.trim()).ok_or(AmountError::Format)?;
        if decimal.whole.is_empty() {
            return Err(AmountError::Format);
        }
        if decimal.fraction.len() > AMOUNT_DECIMALS as usize {
            return Err(AmountError::TooPrecise);
        }
        let atto = scale_decimal(&decimal, AMOUNT_SCALE).ok_or(AmountError::Overflow)?;
        Ok(Amount { atto })
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|error: AmountError| serde::de::Error::custom(format!("amount {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_units_in_cores_and_millicores() {
        assert_eq!(parse_cpu_millis("100m"), Ok(100));
        assert_eq!(parse_cpu_millis("1000m"), Ok(1000));
        assert_eq!(parse_cpu_millis("1"), Ok(1000));
        assert_eq!(parse_cpu_millis("0.5"), Ok(500));
        assert_eq!(parse_cpu_millis("0.01"), Ok(10));
        assert_eq!(parse_cpu_millis(".25"), Ok(250));
        assert_eq!(parse_cpu_millis("1.0005"), Ok(1000));
        assert_eq!(parse_cpu_millis("-100m"), Err(QuantityError::Negative));
        assert_eq!(parse_cpu_millis("-1"), Err(QuantityError::Negative));
        assert_eq!(parse_cpu_millis("1.5m"), Err(QuantityError::Format));
        assert_eq!(parse_cpu_millis("m"), Err(QuantityError::Format));
        assert_eq!(parse_cpu_millis("two"), Err(QuantityError::Format));
        assert_eq!(parse_cpu_millis("1e3"), Err(QuantityError::Format));
        assert_eq!(
            parse_cpu_millis("99999999999999999999"),
            Err(QuantityError::Overflow)
        );
    }

    #[test]
    fn byte_sizes_with_binary_and_decimal_suffixes() {
        assert_eq!(parse_bytes("128Mi"), Ok(134_217_728));
        assert_eq!(parse_bytes("1Gi"), Ok(1_073_741_824));
        assert_eq!(parse_bytes("50Gi"), Ok(53_687_091_200));
        assert_eq!(parse_bytes("1.5Gi"), Ok(1_610_612_736));
        assert_eq!(parse_bytes("1Ki"), Ok(1024));
        assert_eq!(parse_bytes("2Ti"), Ok(2 << 40));
        assert_eq!(parse_bytes("1k"), Ok(1000));
        assert_eq!(parse_bytes("5M"), Ok(5_000_000));
        assert_eq!(parse_bytes("10G"), Ok(10_000_000_000));
        assert_eq!(parse_bytes("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("-1Gi"), Err(QuantityError::Negative));
        assert_eq!(parse_bytes("1K"), Err(QuantityError::Format));
        assert_eq!(parse_bytes("1GB"), Err(QuantityError::Format));
        assert_eq!(parse_bytes("Gi"), Err(QuantityError::Format));
        assert_eq!(parse_bytes("16Ei"), Err(QuantityError::Overflow));
    }

    #[test]
    fn amounts_are_exact_decimals() {
        let amount: Amount = "1000".parse().unwrap();
        assert_eq!(amount.to_dec_coin_string(), "1000.000000000000000000");
        assert_eq!(amount.floor_units(), 1000);
        let half: Amount = "0.5".parse().unwrap();
        assert_eq!(half.to_string(), "0.5");
        assert_eq!(half.floor_units(), 0);
        assert_eq!(half.ceil_units(), 1);
        assert_eq!("1.x".parse::<Amount>(), Err(AmountError::Format));
        assert_eq!("-1".parse::<Amount>(), Err(AmountError::Format));
        assert_eq!(
            "0.0000000000000000001".parse::<Amount>(),
            Err(AmountError::TooPrecise)
        );
        assert_eq!(
            Amount::from_units(3)
                .unwrap()
                .checked_mul(4)
                .unwrap()
                .to_string(),
            "12"
        );
        assert!(Amount::from_units(u128::MAX).is_none());
    }

    #[test]
    fn gibibyte_text_rounds_down() {
        assert_eq!(format_gibibytes(80 << 30), "80Gi");
        assert_eq!(format_gibibytes((40 << 30) + 5), "40Gi");
    }
}
