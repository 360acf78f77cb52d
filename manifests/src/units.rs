//! Akash quantity syntax: CPU units, byte sizes and prices.
//!
//! Akash has two SDL parsers and they read sizes differently: the Go one (`chain-sdk`
//! `go/sdl/units.go`) takes case-sensitive `k`/`M`/`G`/... and `Ki`/`Mi`/`Gi`/... through a
//! float, the TypeScript one that Akash Console uses (`ts/src/sdl/sizes.ts`) lower-cases the
//! text first, so `gi`, `GB`, `Gb` and `512mb` are sizes there too. Leasehold accepts what either
//! accepts, with exact integer arithmetic, and rounds a fractional result up to a whole byte or
//! millicore as `sizes.ts` does.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The canonical byte suffixes, for messages: decimal `k` ... `E` (also written `kb`, `GB`,
/// `gb`...) and binary `Ki` ... `Ei` (also `gi`, `GI`...). No suffix means bytes.
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

/// Size prefixes in order of power, as `sizes.ts` lists them (`k` = 1000¹ or 1024¹ ...).
const SIZE_PREFIXES: &[u8] = b"kmgtpe";

/// Most significant decimal digits in a mantissa (any 38 digits fit in a u128).
const MAX_DIGITS: usize = 38;
/// Largest decimal exponent accepted in `1.5e3`-style numbers (Go's `ParseFloat` reads them).
const MAX_EXPONENT: i32 = 30;

/// A non-negative decimal as an exact fraction `numerator / denominator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fraction {
    numerator: u128,
    denominator: u128,
}

impl Fraction {
    /// `self × scale`, rounded up to an integer; `None` on overflow.
    fn scale_ceil(self, scale: u128) -> Option<u128> {
        Some(
            self.numerator
                .checked_mul(scale)?
                .div_ceil(self.denominator),
        )
    }
}

/// Reads `123`, `1.5`, `.5`, `1.` and, as Go's `ParseFloat` does, `1.5e3` / `2E-3`.
fn read_number(text: &str) -> Result<Fraction, QuantityError> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => {
            let exponent = &text[at + 1..];
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError::Format);
            }
            let value: i32 = exponent.parse().map_err(|_| QuantityError::Overflow)?;
            if value.abs() > MAX_EXPONENT {
                return Err(QuantityError::Overflow);
            }
            (&text[..at], value)
        }
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let is_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !is_digits(whole) || !is_digits(fraction) {
        return Err(QuantityError::Format);
    }
    // Trailing zeros change nothing and would only eat into the digit budget.
    let fraction = fraction.trim_end_matches('0');
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > MAX_DIGITS {
        return Err(QuantityError::Overflow);
    }
    let numerator: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| QuantityError::Overflow)?
    };
    let fraction_digits = i32::try_from(fraction.len()).map_err(|_| QuantityError::Overflow)?;
    let shift = exponent - fraction_digits;
    let power = |exponent: i32| {
        10u128
            .checked_pow(exponent.unsigned_abs())
            .ok_or(QuantityError::Overflow)
    };
    if shift >= 0 {
        let numerator = numerator
            .checked_mul(power(shift)?)
            .ok_or(QuantityError::Overflow)?;
        Ok(Fraction {
            numerator,
            denominator: 1,
        })
    } else {
        let denominator = power(shift).ok().filter(|_| -shift <= 38);
        match denominator {
            Some(denominator) => Ok(Fraction {
                numerator,
                denominator,
            }),
            // Too small to matter: any positive value below 10^-38 rounds up to one unit.
            None => Ok(Fraction {
                numerator: u128::from(numerator > 0),
                denominator: u128::MAX,
            }),
        }
    }
}

/// Why a quantity could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantityError {
    /// The value is below zero.
    Negative,
    /// The text is not a number with an allowed suffix.
    Format,
    /// The number is followed by a suffix no Akash parser gives a size meaning to, or one
    /// the two read differently (`GiB`: Akash Console reads 10⁹ bytes, the CLI refuses it).
    Unit(String),
    /// The value does not fit in 64 bits.
    Overflow,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantityError::Negative => f.write_str("must not be negative"),
            QuantityError::Format => f.write_str("is not a valid quantity"),
            QuantityError::Unit(unit) => write!(f, "has an unknown or ambiguous unit `{unit}`"),
            QuantityError::Overflow => f.write_str("is too large"),
        }
    }
}

impl std::error::Error for QuantityError {}

fn reject_sign(text: &str) -> Result<&str, QuantityError> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(QuantityError::Negative);
    }
    Ok(text.strip_prefix('+').unwrap_or(text))
}

/// Splits `text` into its number and the trailing letters (`"1.5Gi"` → `("1.5", "Gi")`).
/// An exponent (`1e3`) belongs to the number; a lone trailing `e`/`E` is the exa prefix.
fn split_unit(text: &str) -> (&str, &str) {
    let letters_from = text
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_alphabetic())
        .last()
        .map_or(text.len(), |(at, _)| at);
    (&text[..letters_from], &text[letters_from..])
}

/// Multiplier of a size unit, case-insensitively: none (bytes), `b`, a prefix from
/// [`SIZE_PREFIXES`] alone or with `b` (powers of 1000) or with `i` (powers of 1024).
fn byte_multiplier(unit: &str) -> Result<u128, QuantityError> {
    let lower = unit.to_ascii_lowercase();
    if lower.is_empty() || lower == "b" {
        return Ok(1);
    }
    let unknown = || QuantityError::Unit(unit.to_owned());
    let (prefix, rest) = lower.split_at(1);
    let power = SIZE_PREFIXES
        .iter()
        .position(|p| prefix.as_bytes()[0] == *p)
        .ok_or_else(unknown)?;
    let base: u128 = match rest {
        "" | "b" => 1000,
        "i" => 1024,
        _ => return Err(unknown()),
    };
    let exponent = u32::try_from(power + 1).map_err(|_| unknown())?;
    base.checked_pow(exponent).ok_or(QuantityError::Overflow)
}

/// Parses CPU units into millicores: `"100m"` is 100, `0.5` and `"0.5"` are 500, `2` is 2000.
/// The millicore suffix is read case-insensitively and fractions round up, as in `sizes.ts`.
///
/// ```
/// assert_eq!(leasehold_manifests::parse_cpu_millis("250m"), Ok(250));
/// assert_eq!(leasehold_manifests::parse_cpu_millis("0.01"), Ok(10));
/// assert_eq!(leasehold_manifests::parse_cpu_millis("250.5m"), Ok(251));
/// ```
pub fn parse_cpu_millis(text: &str) -> Result<u64, QuantityError> {
    let text = reject_sign(text)?;
    let (number, unit) = split_unit(text);
    let scale = match unit {
        "" => 1000,
        "m" | "M" => 1,
        other => return Err(QuantityError::Unit(other.to_owned())),
    };
    let millis = read_number(number)?
        .scale_ceil(scale)
        .ok_or(QuantityError::Overflow)?;
    u64::try_from(millis).map_err(|_| QuantityError::Overflow)
}

/// Parses a memory or storage size into bytes: `"512Mi"`, `"1.5Gi"`, `"10G"`, `"16GB"`,
/// `"4gi"`, `"1024"`; a fractional byte rounds up.
///
/// ```
/// assert_eq!(leasehold_manifests::parse_bytes("1Gi"), Ok(1 << 30));
/// assert_eq!(leasehold_manifests::parse_bytes("4gi"), Ok(4 << 30));
/// assert_eq!(leasehold_manifests::parse_bytes("16GB"), Ok(16_000_000_000));
/// assert_eq!(leasehold_manifests::parse_bytes("2k"), Ok(2000));
/// ```
pub fn parse_bytes(text: &str) -> Result<u64, QuantityError> {
    let text = reject_sign(text)?;
    let (number, unit) = split_unit(text);
    let multiplier = byte_multiplier(unit)?;
    let bytes = read_number(number)?
        .scale_ceil(multiplier)
        .ok_or(QuantityError::Overflow)?;
    u64::try_from(bytes).map_err(|_| QuantityError::Overflow)
}

/// Parses a size with a binary suffix only (`Ki` ... `Ei`, any case) or none, the way Akash's
/// Go parser reads a `memoryQuantity` such as GPU RAM: `80Gi` is 80 × 2³⁰, `80GB` is refused
/// rather than read as 74.5 Gi.
///
/// ```
/// assert_eq!(leasehold_manifests::parse_binary_bytes("80Gi"), Ok(80 << 30));
/// assert!(leasehold_manifests::parse_binary_bytes("80GB").is_err());
/// ```
pub fn parse_binary_bytes(text: &str) -> Result<u64, QuantityError> {
    let (_, unit) = split_unit(reject_sign(text)?);
    let lower = unit.to_ascii_lowercase();
    if !(lower.is_empty() || lower.len() == 2 && lower.ends_with('i')) {
        return Err(QuantityError::Unit(unit.to_owned()));
    }
    parse_bytes(text)
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
        let text = text.trim();
        // Plain decimals only: no exponent, no leading `.`, no sign.
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AmountError::Format);
        }
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AmountError::Format);
        }
        if fraction.len() > AMOUNT_DECIMALS as usize {
            return Err(AmountError::TooPrecise);
        }
        let atto = read_number(text)
            .map_err(|_| AmountError::Overflow)?
            .scale_ceil(AMOUNT_SCALE)
            .ok_or(AmountError::Overflow)?;
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

    /// Akash Go `go/sdl/units_test.go` (`TestCPUQuantity`) and TypeScript `ts/src/sdl/sizes.spec.ts`
    /// (`convertCpuResourceString`), plus Leasehold's own edges.
    fn unit_error(unit: &str) -> Result<u64, QuantityError> {
        Err(QuantityError::Unit(unit.to_owned()))
    }

    fn cpu_cases() -> Vec<(&'static str, Result<u64, QuantityError>)> {
        vec![
            // Go
            ("1", Ok(1000)),
            ("-1", Err(QuantityError::Negative)),
            ("0.5", Ok(500)),
            ("-0.5", Err(QuantityError::Negative)),
            ("100m", Ok(100)),
            ("-100m", Err(QuantityError::Negative)),
            ("", Err(QuantityError::Format)),
            // TypeScript
            ("500m", Ok(500)),
            ("250.5m", Ok(251)),
            ("500M", Ok(500)),
            ("0", Ok(0)),
            // ours
            ("1000m", Ok(1000)),
            ("0.01", Ok(10)),
            (".25", Ok(250)),
            ("1.0005", Ok(1001)),
            ("1e3m", Ok(1000)),
            ("2E0", Ok(2000)),
            ("m", Err(QuantityError::Format)),
            ("two", unit_error("two")),
            ("1 core", unit_error("core")),
            ("1..5", Err(QuantityError::Format)),
            ("99999999999999999999", Err(QuantityError::Overflow)),
        ]
    }

    #[test]
    fn cpu_units_as_either_akash_parser_reads_them() {
        for (text, expected) in cpu_cases() {
            assert_eq!(parse_cpu_millis(text), expected, "cpu units `{text}`");
        }
    }

    const M: u64 = 1_000_000;
    const G: u64 = 1_000_000_000;
    const T: u64 = 1_000_000_000_000;
    const P: u64 = 1_000_000_000_000_000;
    const E: u64 = 1_000_000_000_000_000_000;
    const EI: u64 = 1 << 60;

    /// Akash Go `go/sdl/units_test.go` (`TestByteQuantity`), TypeScript
    /// `ts/src/sdl/sizes.spec.ts` (`convertResourceString`), the spellings Akash users write
    /// (issue #16) and Leasehold's own edges.
    fn size_cases() -> Vec<(&'static str, Result<u64, QuantityError>)> {
        vec![
            // Go
            ("1", Ok(1)),
            ("-1", Err(QuantityError::Negative)),
            ("1M", Ok(M)),
            ("-1M", Err(QuantityError::Negative)),
            ("0.5M", Ok(M / 2)),
            ("-0.5M", Err(QuantityError::Negative)),
            ("3M", Ok(3 * M)),
            ("3G", Ok(3 * G)),
            ("3T", Ok(3 * T)),
            ("3P", Ok(3 * P)),
            ("3E", Ok(3 * E)),
            ("", Err(QuantityError::Format)),
            // TypeScript: integer inputs
            ("1k", Ok(1000)),
            ("1Ki", Ok(1024)),
            ("1m", Ok(M)),
            ("1Mi", Ok(1_048_576)),
            ("1g", Ok(G)),
            ("1Gi", Ok(1_073_741_824)),
            ("1t", Ok(T)),
            ("1Ti", Ok(1_099_511_627_776)),
            ("1p", Ok(P)),
            ("1Pi", Ok(1_125_899_906_842_624)),
            ("1e", Ok(E)),
            ("1Ei", Ok(EI)),
            // TypeScript: decimal inputs, rounded up
            ("0.5k", Ok(500)),
            ("0.5Ki", Ok(512)),
            ("0.5m", Ok(500_000)),
            ("0.5Mi", Ok(524_288)),
            ("0.3g", Ok(300_000_000)),
            ("0.3Gi", Ok(322_122_548)),
            ("0.1t", Ok(100_000_000_000)),
            ("0.1Ti", Ok(109_951_162_778)),
            ("0.001Gi", Ok(1_073_742)),
            ("1.234Mi", Ok(1_293_943)),
            ("0.0009765625Mi", Ok(1024)),
            // TypeScript: unit-less inputs
            ("536870912", Ok(512 << 20)),
            ("0", Ok(0)),
            ("1.5", Ok(2)),
            ("Gi", Err(QuantityError::Format)),
            (".", Err(QuantityError::Format)),
            ("1.2.3", Err(QuantityError::Format)),
            ("1.2.3Gi", Err(QuantityError::Format)),
            (".5Gi", Ok(536_870_912)),
            ("1.", Ok(1)),
            (".0", Ok(0)),
            (
                "1.000000000000000000000000000000000000000000Gi",
                Ok(1 << 30),
            ),
            // TypeScript: edge cases
            ("1GI", Ok(1 << 30)),
            ("1gi", Ok(1 << 30)),
            ("0Gi", Ok(0)),
            ("9.5Ei", Ok(9 * EI + EI / 2)),
            ("9.5Pi", Ok(19 << 49)),
            // Spellings from Akash users' files
            ("4gi", Ok(4 << 30)),
            ("512mi", Ok(512 << 20)),
            ("16GB", Ok(16 * G)),
            ("15Gb", Ok(15 * G)),
            ("512Mb", Ok(512 * M)),
            ("8gb", Ok(8 * G)),
            ("100kb", Ok(100_000)),
            ("2048b", Ok(2048)),
            // Go's ParseFloat reads exponents
            ("1e9", Ok(G)),
            ("1.5e3Mi", Ok(1500 << 20)),
            ("2E-3k", Ok(2)),
            // Refused: units neither parser gives a meaning, or they disagree on
            ("1GiB", unit_error("GiB")),
            ("1K", Ok(1000)),
            ("1x", unit_error("x")),
            ("1 Gi", Err(QuantityError::Format)),
            ("1e99", Err(QuantityError::Overflow)),
            ("-1Gi", Err(QuantityError::Negative)),
            ("16Ei", Err(QuantityError::Overflow)),
            ("128Mi", Ok(134_217_728)),
            ("50Gi", Ok(53_687_091_200)),
            ("1.5Gi", Ok(1_610_612_736)),
            ("2Ti", Ok(2 << 40)),
            ("4096", Ok(4096)),
        ]
    }

    #[test]
    fn byte_sizes_as_either_akash_parser_reads_them() {
        for (text, expected) in size_cases() {
            assert_eq!(parse_bytes(text), expected, "size `{text}`");
        }
    }

    #[test]
    fn binary_sizes_refuse_decimal_units() {
        assert_eq!(parse_binary_bytes("80Gi"), Ok(80 << 30));
        assert_eq!(parse_binary_bytes("80gi"), Ok(80 << 30));
        assert_eq!(parse_binary_bytes("1024"), Ok(1024));
        assert_eq!(parse_binary_bytes("80GB"), unit_error("GB"));
        assert_eq!(parse_binary_bytes("80G"), unit_error("G"));
        assert_eq!(parse_binary_bytes("80xi"), unit_error("xi"));
        assert_eq!(parse_binary_bytes("-1Gi"), Err(QuantityError::Negative));
    }

    #[test]
    fn tiny_positive_fractions_round_up_to_one() {
        assert_eq!(parse_bytes("1e-30"), Ok(1));
        assert_eq!(
            parse_bytes("0.000000000000000000000000000000000000001"),
            Ok(1)
        );
        assert_eq!(parse_bytes("0e-30"), Ok(0));
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
