//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`) as integers, rounding up as
//! upstream's `Quantity.MilliValue()` and `Value()` do.

/// Parse a Kubernetes quantity into thousandths of its unit, rounding up (`"100m"` → 100,
/// `"1Gi"` → 1073741824000). `None` if it is not a quantity.
pub fn parse_milli(s: &str) -> Option<i128> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    if num.is_empty() || num == "." {
        return None;
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if frac_part.contains('.') {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    let mut mantissa: i128 = digits.trim_start_matches('0').parse().unwrap_or(0);
    if digits.len() > 30 {
        return None;
    }
    let mut exp10: i32 = -(frac_part.len() as i32) + 3;
    let mut bin: u32 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => bin = 10,
        "Mi" => bin = 20,
        "Gi" => bin = 30,
        "Ti" => bin = 40,
        "Pi" => bin = 50,
        "Ei" => bin = 60,
        other => {
            let e = other.strip_prefix(['e', 'E'])?;
            exp10 += e.parse::<i32>().ok()?;
        }
    }
    mantissa = mantissa.checked_mul(1i128 << bin)?;
    if exp10 >= 0 {
        mantissa = mantissa.checked_mul(10i128.checked_pow(exp10 as u32)?)?;
    } else {
        let d = 10i128.checked_pow((-exp10) as u32).unwrap_or(i128::MAX);
        mantissa = (mantissa + d - 1) / d;
    }
    Some(if neg { -mantissa } else { mantissa })
}

/// Whole units, rounded up (`"1.5"` → 2, `"100Mi"` → 104857600); `None` if not a quantity.
pub fn value(s: &str) -> Option<i64> {
    parse_milli(s)
        .map(|v| ((v + 999).div_euclid(1000)).clamp(i64::MIN as i128, i64::MAX as i128) as i64)
}

/// Thousandths of the unit, rounded up (`"100m"` → 100); `None` if not a quantity.
pub fn milli_value(s: &str) -> Option<i64> {
    parse_milli(s).map(|v| v.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes_and_rounds_up() {
        assert_eq!(milli_value("100m"), Some(100));
        assert_eq!(milli_value("1.5"), Some(1500));
        assert_eq!(value("1Gi"), Some(1 << 30));
        assert_eq!(value("100M"), Some(100_000_000));
        assert_eq!(value("1500m"), Some(2));
        assert_eq!(value("2e3"), Some(2000));
        assert_eq!(value("bogus"), None);
    }
}
