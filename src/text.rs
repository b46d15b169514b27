//! Small text helpers the request path, the log and the admin views share: decimal digits
//! without the formatting machinery, and cutting a string on a character boundary.

/// The decimal digits of `n`, right-aligned in a buffer, and where they start.
fn digits(mut n: u64) -> ([u8; 20], usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    (digits, at)
}

/// Appends `n` in decimal to `out` (no formatting machinery, no allocation beyond `out`'s).
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let (digits, at) = digits(n);
    out.extend_from_slice(&digits[at..]);
}

/// [`push_decimal`] for a `String`.
pub fn push_decimal_str(out: &mut String, n: u64) {
    let (digits, at) = digits(n);
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn utf8_prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking a cut with `...`.
pub fn truncate_marked(mut s: String, max: usize) -> String {
    if s.len() > max {
        let end = utf8_prefix(&s, max).len();
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_the_numbers_own_digits() {
        for n in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
            let mut s = String::from("x");
            push_decimal_str(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        assert_eq!(utf8_prefix("héllo", 2), "h");
        assert_eq!(utf8_prefix("héllo", 3), "hé");
        assert_eq!(utf8_prefix("abc", 10), "abc");
        assert_eq!(truncate_marked("héllo".into(), 2), "h...");
        assert_eq!(truncate_marked("abc".into(), 3), "abc");
    }
}
