//! RFC 3339 timestamps, as kubelet, Docker and applications write them, and the window a line's own
//! time must fall in to be believed.

const NS: i64 = 1_000_000_000;

/// Seconds and nanoseconds since the epoch as one count of nanoseconds, if it is a time records can hold:
/// from 1970-01-01 to 2262-04-11 (the end of i64 nanoseconds). Never wraps: a year-9999 claim must not
/// come out as 1816.
pub fn epoch_ns(seconds: i64, frac_ns: i64) -> Option<i64> {
    seconds.checked_mul(NS)?.checked_add(frac_ns).filter(|&ns| ns >= 0)
}

/// How far a line's own time may lie from the runtime's for the line to keep it.
#[derive(Clone, Copy)]
pub struct Window {
    max_past_ns: i64,
    max_future_ns: i64,
}

impl Window {
    /// From seconds; a window too wide for i64 nanoseconds is as wide as they go.
    pub fn from_secs(max_past_s: u64, max_future_s: u64) -> Self {
        let ns = |s: u64| i64::try_from(s).ok().and_then(|s| s.checked_mul(NS)).unwrap_or(i64::MAX);
        Window { max_past_ns: ns(max_past_s), max_future_ns: ns(max_future_s) }
    }

    /// Whether a line written at `observed_ns` (the runtime's time) may say it happened at `claimed_ns`.
    pub fn admits(&self, claimed_ns: i64, observed_ns: i64) -> bool {
        observed_ns.saturating_sub(self.max_past_ns) <= claimed_ns
            && claimed_ns <= observed_ns.saturating_add(self.max_future_ns)
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |n, &c| n * 10 + i64::from(c - b'0')))
}

fn is_leap_year(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap_year(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Lines written within the same second share their 'YYYY-MM-DDTHH:MM:SS' prefix:
/// converting it once per second keeps date arithmetic off the profile.
pub struct SecondCache {
    /// Always a valid prefix whose value is `seconds`: a prefix equal to it is taken unchecked.
    prefix: [u8; 19],
    seconds: i64,
}

impl Default for SecondCache {
    /// A fresh cache holds a real entry, the epoch (not 19 NUL bytes, which would then pass for it).
    fn default() -> Self {
        SecondCache { prefix: *b"1970-01-01T00:00:00", seconds: 0 }
    }
}

impl SecondCache {
    fn epoch(&mut self, p: &[u8]) -> Option<i64> {
        if p.len() < 19 {
            return None;
        }
        let p = &p[..19];
        if p == self.prefix {
            return Some(self.seconds);
        }
        if p[4] != b'-' || p[7] != b'-' || !matches!(p[10], b'T' | b't' | b' ') || p[13] != b':' || p[16] != b':' {
            return None;
        }
        let (y, mo, d) = (digits(&p[0..4])?, digits(&p[5..7])?, digits(&p[8..10])?);
        let (h, mi, s) = (digits(&p[11..13])?, digits(&p[14..16])?, digits(&p[17..19])?);
        // A leap second (:60) is taken at any minute, as the next minute's :00; a day past its month's
        // end is no date (2024-02-31 is not 2024-03-02).
        if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 {
            return None;
        }
        self.seconds = days_from_civil(y, mo, d) * 86_400 + h * 3_600 + mi * 60 + s;
        self.prefix.copy_from_slice(p);
        Some(self.seconds)
    }

    /// Nanoseconds since the epoch: a fraction of any length (the first 9 digits count), then Z or ±hh:mm
    /// (at most ±23:59). None also for a time outside what `epoch_ns` can hold.
    pub fn parse_ns(&mut self, ts: &[u8]) -> Option<i64> {
        let seconds = self.epoch(ts)?;
        // The form kubelet and Docker write: .nnnnnnnnnZ
        if ts.len() == 30 && ts[19] == b'.' && ts[29] == b'Z' {
            if let Some(frac) = digits(&ts[20..29]) {
                return epoch_ns(seconds, frac);
            }
        }
        let mut rest = &ts[19..];
        let mut frac_ns = 0;
        if rest.first() == Some(&b'.') {
            let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return None;
            }
            let used = n.min(9);
            frac_ns = digits(&rest[1..1 + used])? * 10i64.pow((9 - used) as u32);
            rest = &rest[1 + n..];
        }
        let offset = match rest {
            b"Z" | b"z" => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
                if h > 23 || m > 59 {
                    return None;
                }
                let secs = h * 3_600 + m * 60;
                if *sign == b'+' { secs } else { -secs }
            }
            _ => return None,
        };
        epoch_ns(seconds - offset, frac_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-02T03:04:05Z in seconds since the epoch.
    const T0: i64 = 1_704_164_645;

    fn ns(ts: &str) -> Option<i64> {
        SecondCache::default().parse_ns(ts.as_bytes())
    }

    #[test]
    fn kubelet_and_docker_nanosecond_form() {
        assert_eq!(ns("2024-01-02T03:04:05.123456789Z"), Some(T0 * NS + 123_456_789));
        assert_eq!(ns("1970-01-01T00:00:00.000000000Z"), Some(0));
        assert_eq!(ns("1970-01-01T00:00:00.000000001Z"), Some(1));
        assert_eq!(ns("2000-02-29T12:00:00.000000000Z"), Some(951_825_600 * NS)); // leap day
    }

    #[test]
    fn rfc3339_variants() {
        for form in ["2024-01-02T03:04:05Z", "2024-01-02t03:04:05z", "2024-01-02 03:04:05Z", "2024-01-02T03:04:05+00:00",
                     "2024-01-02T03:04:05-00:00", "2024-01-02T05:04:05+02:00", "2024-01-01T21:34:05-05:30"] {
            assert_eq!(ns(form), Some(T0 * NS), "{form}");
        }
        assert_eq!(ns("2024-01-02T03:04:05.5+01:00"), Some((T0 - 3_600) * NS + 500_000_000));
    }

    #[test]
    fn fractions_of_any_length_keep_nine_digits_unrounded() {
        for (frac, want) in [(".5", 500_000_000), (".05", 50_000_000), (".123", 123_000_000), (".123456", 123_456_000),
                             (".000000001", 1), (".123456789", 123_456_789), (".1234567899", 123_456_789),
                             (".999999999999", 999_999_999), (".0", 0)] {
            assert_eq!(ns(&format!("2024-01-02T03:04:05{frac}Z")), Some(T0 * NS + want), "{frac}");
        }
        // a 30-byte text that is not the fast form still goes through the general path
        assert_eq!(ns("2024-01-02T03:04:05.1234567+00:00"), Some(T0 * NS + 123_456_700));
    }

    #[test]
    fn malformed_times() {
        for bad in ["", "2024", "2024-01-02T03:04:05", "2024-01-02T03:04:05.Z", "2024-01-02T03:04:05.", "2024-01-02T03:04:05Zjunk",
                    "2024-01-02T03:04:05 Z", "2024-01-02T03:04:05+0200", "2024-01-02T03:04:05+02", "2024-01-02T03:04:05+2:00",
                    "2024-01-02T03:04:05+0a:00", "2024-01-02T03:04:05.12a3Z", "2024-01-02X03:04:05Z", "2024/01/02T03:04:05Z",
                    "2024-01-02T03-04-05Z", "24-01-02T03:04:05Z", "2024-1-2T03:04:05Z", "+024-01-02T03:04:05Z",
                    "2024-00-02T03:04:05Z", "2024-13-02T03:04:05Z", "2024-01-00T03:04:05Z", "2024-01-32T03:04:05Z",
                    "2024-01-02T24:04:05Z", "2024-01-02T03:60:05Z", "2024-01-02T03:04:61Z", "2024-01-02T03:04:05.123456789X",
                    "1704164645", "２０２４-01-02T03:04:05Z"] {
            assert_eq!(ns(bad), None, "{bad:?}");
        }
        assert_eq!(SecondCache::default().parse_ns(b"2024-01-02T03:04:05.\xffZ"), None);
    }

    #[test]
    fn leap_second_is_the_next_minute() {
        assert_eq!(ns("2024-01-02T03:04:60Z"), ns("2024-01-02T03:05:00Z"));
    }

    #[test]
    fn range_of_i64_nanoseconds() {
        assert_eq!(ns("1969-12-31T23:59:59.999999999Z"), None);
        assert_eq!(ns("1970-01-01T00:00:00+01:00"), None); // 1969 in UTC
        assert_eq!(ns("1970-01-01T00:00:00-01:00"), Some(3_600 * NS));
        assert_eq!(ns("2262-04-11T23:47:16.854775807Z"), Some(i64::MAX));
        assert_eq!(ns("2262-04-11T23:47:16.854775808Z"), None);
        assert_eq!(ns("2262-04-12T00:00:00Z"), None);
        assert_eq!(ns("9999-12-31T23:59:59Z"), None); // never wraps around to some earlier year
        assert_eq!(ns("0000-01-01T00:00:00Z"), None);
    }

    #[test]
    fn cache_is_reused_within_a_second_and_replaced_after() {
        let mut c = SecondCache::default();
        assert_eq!(c.parse_ns(b"2024-01-02T03:04:05.000000001Z"), Some(T0 * NS + 1));
        assert_eq!(c.parse_ns(b"2024-01-02T03:04:05.000000002Z"), Some(T0 * NS + 2));
        assert_eq!(c.parse_ns(b"2024-01-02T03:04:05+01:00"), Some((T0 - 3_600) * NS));
        assert_eq!(c.parse_ns(b"2024-01-02T03:04:06Z"), Some((T0 + 1) * NS));
        assert_eq!(c.parse_ns(b"2024-01-02T03:04:05Z"), Some(T0 * NS));
        // a cached second does not make a bad suffix good, nor does a bad prefix disturb the cache
        assert_eq!(c.parse_ns(b"2024-01-02T03:04:05"), None);
        assert_eq!(c.parse_ns(b"2024-01-02T03:04:99Z"), None);
        assert_eq!(c.parse_ns(b"2024-01-02T03:04:05.25Z"), Some(T0 * NS + 250_000_000));
    }

    // A fresh cache's prefix used to be 19 NUL bytes, so 19 NULs and a zone passed for the epoch unchecked.
    #[test]
    fn nul_bytes_are_not_a_time() {
        assert_eq!(SecondCache::default().parse_ns(b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0Z"), None);
        let mut c = SecondCache::default();
        assert_eq!(c.parse_ns(&[0; 20]), None);
        assert_eq!(c.parse_ns(&[0xff; 30]), None);
        // the fresh cache's own entry is a real one
        assert_eq!(c.parse_ns(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(SecondCache::default().parse_ns(b"1970-01-01T00:00:00.5+00:00"), Some(NS / 2));
        assert_eq!(SecondCache::default().parse_ns(b"1970-01-01T00:00:00-00:30"), Some(1_800 * NS));
    }

    #[test]
    fn impossible_dates_and_offsets_are_refused() {
        assert_eq!(ns("2024-02-31T00:00:00Z"), None);
        assert_eq!(ns("2024-01-02T03:04:05+99:99"), None);
        for bad in ["2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "2100-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
                    "2024-04-31T00:00:00Z", "2024-06-31T00:00:00Z", "2024-09-31T00:00:00Z", "2024-11-31T00:00:00Z",
                    "2024-01-02T03:04:05+24:00", "2024-01-02T03:04:05-24:00", "2024-01-02T03:04:05+00:60",
                    "2024-01-02T03:04:05-05:99", "2024-01-02T03:04:05.5+23:60", "2024-01-02T03:04:05+99:00"] {
            assert_eq!(ns(bad), None, "{bad}");
        }
        // the last day of every month, leap years by the Gregorian rule
        for (date, days) in [("2024-01-31", 19_753), ("2024-02-29", 19_782), ("2000-02-29", 11_016), ("2023-02-28", 19_416),
                             ("2024-04-30", 19_843), ("2024-06-30", 19_904), ("2024-09-30", 19_996),
                             ("2024-11-30", 20_057), ("2024-12-31", 20_088)] {
            assert_eq!(ns(&format!("{date}T00:00:00Z")), Some(days * 86_400 * NS), "{date}");
        }
        // the widest offsets there are, and a leap second with one
        assert_eq!(ns("2024-01-03T03:02:05+23:59"), Some((T0 - 60) * NS));
        assert_eq!(ns("2024-01-01T03:06:05-23:59"), Some((T0 + 60) * NS));
        assert_eq!(ns("2024-01-02T05:34:60+02:30"), ns("2024-01-02T03:05:00Z"));
        // a refused time does not disturb the cache
        let mut c = SecondCache::default();
        assert_eq!(c.parse_ns(b"2024-01-02T03:04:05Z"), Some(T0 * NS));
        assert_eq!(c.parse_ns(b"2024-01-02T03:04:05+24:00"), None);
        assert_eq!(c.parse_ns(b"2024-02-31T03:04:05Z"), None);
        assert_eq!(c.parse_ns(b"2024-01-02T03:04:05-01:00"), Some((T0 + 3_600) * NS));
    }

    #[test]
    fn epoch_ns_never_wraps() {
        assert_eq!(epoch_ns(0, 0), Some(0));
        assert_eq!(epoch_ns(T0, 7), Some(T0 * NS + 7));
        assert_eq!(epoch_ns(-1, 999_999_999), None);
        assert_eq!(epoch_ns(-1, NS), Some(0));
        assert_eq!(epoch_ns(9_223_372_036, 854_775_807), Some(i64::MAX));
        assert_eq!(epoch_ns(9_223_372_036, 854_775_808), None);
        assert_eq!(epoch_ns(9_223_372_037, 0), None);
        assert_eq!(epoch_ns(i64::MAX, 0), None);
        assert_eq!(epoch_ns(i64::MIN, 0), None);
    }

    #[test]
    fn days_from_civil_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 1, 2), T0 / 86_400);
        assert_eq!(days_from_civil(2024, 3, 1) - days_from_civil(2024, 2, 28), 2); // leap year
        assert_eq!(days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28), 1); // not one
    }

    #[test]
    fn window_admits_claims_near_the_runtime_time() {
        let w = Window::from_secs(60, 5);
        let obs = T0 * NS;
        assert!(w.admits(obs, obs));
        assert!(w.admits(obs - 60 * NS, obs) && !w.admits(obs - 60 * NS - 1, obs));
        assert!(w.admits(obs + 5 * NS, obs) && !w.admits(obs + 5 * NS + 1, obs));
        let zero = Window::from_secs(0, 0);
        assert!(zero.admits(obs, obs) && !zero.admits(obs + 1, obs) && !zero.admits(obs - 1, obs));
    }

    #[test]
    fn window_too_wide_saturates() {
        let w = Window::from_secs(u64::MAX, 9_300_000_000); // both beyond i64 nanoseconds
        assert!(w.admits(0, i64::MAX) && w.admits(i64::MAX, 0) && w.admits(0, 0));
        assert!(!w.admits(-1, i64::MAX)); // observed - i64::MAX is 0 at least
        let past_only = Window::from_secs(u64::MAX, 0);
        assert!(past_only.admits(0, i64::MAX) && !past_only.admits(1, 0));
    }
}
