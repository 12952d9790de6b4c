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

/// Lines written within the same second share their 'YYYY-MM-DDTHH:MM:SS' prefix:
/// converting it once per second keeps date arithmetic off the profile.
#[derive(Default)]
pub struct SecondCache {
    prefix: [u8; 19],
    seconds: i64,
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
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
            return None;
        }
        self.seconds = days_from_civil(y, mo, d) * 86_400 + h * 3_600 + mi * 60 + s;
        self.prefix.copy_from_slice(p);
        Some(self.seconds)
    }

    /// Nanoseconds since the epoch: a fraction of any length (the first 9 digits count), then Z or ±hh:mm.
    /// None also for a time outside what `epoch_ns` can hold.
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
                let secs = digits(&[*h1, *h2])? * 3_600 + digits(&[*m1, *m2])? * 60;
                if *sign == b'+' { secs } else { -secs }
            }
            _ => return None,
        };
        epoch_ns(seconds - offset, frac_ns)
    }
}
