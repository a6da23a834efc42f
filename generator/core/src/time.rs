//! RFC 3339 timestamps of image configurations, without a date library.

/// A parsed `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` timestamp.
struct Timestamp<'a> {
    date_time: &'a str,
    fraction: &'a str,
    offset_seconds: i64,
    unix_seconds: i64,
}

fn parse(text: &str) -> Option<Timestamp<'_>> {
    let text = text.trim();
    let (date_time, rest) = text.split_at_checked(19)?;
    let b = date_time.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = date_time.get(range)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let (fraction, zone) = match rest.strip_prefix('.') {
        Some(after) => {
            let end = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
            (&after[..end], &after[end..])
        }
        None => ("", rest),
    };
    let offset_seconds = match zone {
        "Z" | "z" => 0,
        _ => {
            let sign = match zone.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = zone[1..].split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    let days = bundlegen_protocol::civil::days_from_civil(year, month, day);
    let unix_seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(Timestamp {
        date_time,
        fraction,
        offset_seconds,
        unix_seconds,
    })
}

/// Seconds since the Unix epoch.
pub fn unix_seconds(text: &str) -> Option<i64> {
    parse(text).map(|t| t.unix_seconds)
}

/// The timestamp as Go's `time.RFC3339Nano` prints it (what umoci writes):
/// trailing zeros of the fraction dropped, `Z` for UTC.
pub fn go_rfc3339(text: &str) -> Option<String> {
    let t = parse(text)?;
    let fraction = t.fraction.trim_end_matches('0');
    let mut out = t.date_time.replacen([' ', 't'], "T", 1);
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    if t.offset_seconds == 0 {
        out.push('Z');
    } else {
        let sign = if t.offset_seconds < 0 { '-' } else { '+' };
        let minutes = t.offset_seconds.abs() / 60;
        out.push_str(&format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_like_go() {
        let cases = [
            ("1970-01-01T00:00:00Z", 0, "1970-01-01T00:00:00Z"),
            ("2023-01-06T07:10:42Z", 1_672_989_042, "2023-01-06T07:10:42Z"),
            (
                "2023-01-06T07:10:42.120000000Z",
                1_672_989_042,
                "2023-01-06T07:10:42.12Z",
            ),
            ("2023-01-06T08:10:42+01:00", 1_672_989_042, "2023-01-06T08:10:42+01:00"),
            ("2023-01-06T07:10:42.000+00:00", 1_672_989_042, "2023-01-06T07:10:42Z"),
            ("2000-02-29T23:59:59-05:30", 951_888_599, "2000-02-29T23:59:59-05:30"),
            ("0001-01-01T00:00:00Z", -62_135_596_800, "0001-01-01T00:00:00Z"),
        ];
        for (input, seconds, rendered) in cases {
            assert_eq!(unix_seconds(input), Some(seconds), "{input}");
            assert_eq!(go_rfc3339(input).as_deref(), Some(rendered), "{input}");
        }
        for bad in [
            "",
            "2023-01-06",
            "2023-13-06T07:10:42Z",
            "2023-01-06T07:10:42",
            "2023-01-06T07:10:42+0100",
            "yesterday",
        ] {
            assert_eq!(unix_seconds(bad), None, "{bad}");
        }
    }
}
