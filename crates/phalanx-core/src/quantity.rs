//! Kubernetes resource quantities ("500m", "1.5Gi", "2e3") as integers.
//!
//! The API server accepts only well-formed quantities, but nodes and pods can
//! still carry absurd ones (`1E18`): parsing never panics and never overflows,
//! it returns an error the caller can put in an Event.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    #[error("{0:?} is not a quantity (expected a number with an optional suffix such as m, Ki, Gi, k, M, G)")]
    Malformed(String),
    #[error("{0:?} is negative")]
    Negative(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// The value in thousandths, rounded up, as kube's `MilliValue` does.
pub fn parse_milli(text: &str) -> Result<i64, QuantityError> {
    parse_scaled(text, 3)
}

/// The value in whole units, rounded up, as kube's `Value` does.
pub fn parse_units(text: &str) -> Result<i64, QuantityError> {
    parse_scaled(text, 0)
}

/// Parses `text` and returns `ceil(value * 10^decimal_shift)`.
fn parse_scaled(text: &str, decimal_shift: i32) -> Result<i64, QuantityError> {
    let malformed = || QuantityError::Malformed(text.to_string());
    let too_large = || QuantityError::TooLarge(text.to_string());
    let s = text.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(malformed());
    }
    let (mut decimal_exp, binary_exp): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().map_err(|_| malformed())?;
            if e.abs() > 40 {
                return Err(too_large());
            }
            (e, 0)
        }
        _ => return Err(malformed()),
    };
    let digits = format!("{whole}{fraction}");
    if digits.len() > 30 {
        return Err(too_large());
    }
    let mut mantissa: i128 = digits.parse().map_err(|_| malformed())?;
    if negative && mantissa != 0 {
        return Err(QuantityError::Negative(text.to_string()));
    }
    decimal_exp += decimal_shift - fraction.len() as i32;
    mantissa = mantissa.checked_shl(binary_exp).ok_or_else(too_large)?;
    if (mantissa >> binary_exp) != digits.parse::<i128>().map_err(|_| malformed())? {
        return Err(too_large());
    }
    let value = if decimal_exp >= 0 {
        10i128.checked_pow(decimal_exp as u32).and_then(|p| mantissa.checked_mul(p)).ok_or_else(too_large)?
    } else {
        let divisor = 10i128.checked_pow((-decimal_exp) as u32).ok_or_else(too_large)?;
        (mantissa + divisor - 1) / divisor
    };
    i64::try_from(value).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("1", 1000)]
    #[case("500m", 500)]
    #[case("0.5", 500)]
    #[case("2.25", 2250)]
    #[case("1k", 1_000_000)]
    #[case("1e3", 1_000_000)]
    #[case("1Ki", 1_024_000)]
    #[case("100u", 1)]
    #[case("0", 0)]
    #[case("+3", 3000)]
    fn milli_values(#[case] text: &str, #[case] expected: i64) {
        assert_eq!(parse_milli(text), Ok(expected));
    }

    #[rstest]
    #[case("8", 8)]
    #[case("2Ti", 2 * 1024_i64.pow(4))]
    #[case("1.5Gi", 3 * 512 * 1024 * 1024)]
    #[case("1500m", 2)]
    #[case("64G", 64_000_000_000)]
    fn unit_values(#[case] text: &str, #[case] expected: i64) {
        assert_eq!(parse_units(text), Ok(expected));
    }

    #[rstest]
    #[case("")]
    #[case("abc")]
    #[case("1.2.3")]
    #[case("5 Gi")]
    #[case("3Xi")]
    #[case(".")]
    fn malformed(#[case] text: &str) {
        assert!(matches!(parse_units(text), Err(QuantityError::Malformed(_))), "{text}");
    }

    #[test]
    fn absurd_values_are_errors_not_overflows() {
        assert!(matches!(parse_milli("1E18"), Err(QuantityError::TooLarge(_))));
        assert!(matches!(parse_units("9Ei"), Err(QuantityError::TooLarge(_))));
        assert!(matches!(parse_units("1e400"), Err(QuantityError::TooLarge(_))));
        assert!(matches!(parse_units("-1"), Err(QuantityError::Negative(_))));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,24}") {
            let _ = parse_milli(&text);
        }

        #[test]
        fn integers_round_trip(n in 0i64..1_000_000_000) {
            proptest::prop_assert_eq!(parse_units(&n.to_string()), Ok(n));
            proptest::prop_assert_eq!(parse_milli(&n.to_string()), Ok(n * 1000));
        }
    }
}
