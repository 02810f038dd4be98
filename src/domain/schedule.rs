//! Time windows written as the standard 5-field cron users know (`"* 0-8,18-23 * * MON-FRI"`), in a
//! timezone. The `cron` crate wants a seconds field first and numbers days Sunday = 1 … Saturday = 7
//! (so a plain `1-5` there would be Sunday–Thursday): the day-of-week field is expanded here into
//! day names, which mean the same to both, and the seconds field is `*` so a window covers its whole
//! minutes.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A window: the minutes a 5-field cron expression matches, in a timezone.
#[derive(Clone, Debug)]
pub struct Window {
    pub text: String,
    pub tz: Tz,
    schedule: cron::Schedule,
}

impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.tz == other.tz
    }
}

impl Window {
    /// Parses `minute hour day-of-month month day-of-week` (standard cron: days 0–7, 0 and 7 both
    /// Sunday, or names) in `tz` (an IANA name such as `Europe/Berlin`, default UTC).
    pub fn parse(text: &str, tz: Option<&str>) -> Result<Window, String> {
        let tz: Tz = match tz {
            None => Tz::UTC,
            Some(t) => t.parse().map_err(|_| {
                format!("{t:?} is not an IANA timezone (e.g. Europe/Berlin, America/New_York, UTC)")
            })?,
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "{text:?}: a window is 5 cron fields (minute hour day-of-month month day-of-week), got {}",
                fields.len()
            ));
        }
        for (field, (name, lo, hi, names)) in fields.iter().zip(FIELDS) {
            check_field(field, lo, hi, names).map_err(|e| format!("{text:?}: {name}: {e}"))?;
        }
        let dow = day_names(fields[4]).map_err(|e| format!("{text:?}: day of week: {e}"))?;
        let six = format!("* {} {} {} {} {}", fields[0], fields[1], fields[2], fields[3], dow);
        // What the cron crate still refuses is told in the person's own terms, not its 6 fields.
        let schedule = cron::Schedule::from_str(&six).map_err(|e| {
            format!("{text:?}: not a cron window this reads ({})", e.to_string().replace(&six, "…"))
        })?;
        Ok(Window { text: text.to_string(), tz, schedule })
    }

    pub fn includes(&self, at: DateTime<Utc>) -> bool {
        self.schedule.includes(at.with_timezone(&self.tz))
    }
}

const MONTHS: [&str; 12] =
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];

/// The first four fields: name, smallest and largest value, names standing for 1, 2, ….
const FIELDS: [(&str, usize, usize, &[&str]); 4] =
    [("minute", 0, 59, &[]), ("hour", 0, 23, &[]), ("day of month", 1, 31, &[]), ("month", 1, 12, &MONTHS)];

/// One of the first four fields: `*`, values, ranges and steps, each value within `lo..=hi`.
fn check_field(field: &str, lo: usize, hi: usize, names: &[&str]) -> Result<(), String> {
    let value = |s: &str| -> Result<usize, String> {
        let up = s.to_ascii_uppercase();
        if let Some(i) = names.iter().position(|n| *n == up) {
            return Ok(i + 1);
        }
        let n: usize = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
        if n < lo || n > hi {
            return Err(format!("{n} is out of range {lo}-{hi}"));
        }
        Ok(n)
    };
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        if let Some(s) = step {
            match s.parse::<usize>() {
                Ok(0) => return Err("a step of 0".into()),
                Ok(_) => {}
                Err(_) => return Err(format!("step {s:?} is not a number")),
            }
        }
        if range == "*" || range == "?" {
            continue;
        }
        match range.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (value(a)?, value(b)?);
                if a > b {
                    return Err(format!("range {range:?} runs backwards"));
                }
            }
            None => {
                value(range)?;
            }
        }
    }
    Ok(())
}

/// Standard cron day-of-week syntax → a list of day names (`*` stays `*`).
fn day_names(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok("*".into());
    }
    let mut days = [false; 7];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<usize>().map_err(|_| format!("step {s:?} is not a number"))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err("a step of 0".into());
        }
        let (from, to) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                None => {
                    let d = day(r)?;
                    (d, if step > 1 { 6 } else { d })
                }
            },
        };
        // 7 is Sunday too: as the end of a range (`5-7`) it means "through Sunday".
        let (from, to) = (from, if to == 0 && from > 0 { 7 } else { to });
        if from > to {
            return Err(format!("range {range:?} runs backwards"));
        }
        for d in (from..=to).step_by(step) {
            days[d % 7] = true;
        }
    }
    Ok(DAYS.iter().zip(days).filter(|(_, on)| *on).map(|(n, _)| *n).collect::<Vec<_>>().join(","))
}

fn day(s: &str) -> Result<usize, String> {
    let up = s.to_ascii_uppercase();
    if let Some(i) = DAYS.iter().position(|d| *d == up) {
        return Ok(i);
    }
    match s.parse::<usize>() {
        Ok(n @ 0..=6) => Ok(n),
        Ok(7) => Ok(0),
        _ => Err(format!("{s:?} is not a day (0-7 with 0 and 7 Sunday, or SUN-SAT)")),
    }
}

/// `90s`, `30m`, `24h`, `7d`.
pub fn parse_duration(s: &str) -> Option<chrono::Duration> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok()?;
    match unit {
        "s" => Some(chrono::Duration::seconds(n)),
        "m" => Some(chrono::Duration::minutes(n)),
        "h" => Some(chrono::Duration::hours(n)),
        "d" => Some(chrono::Duration::days(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn day_of_week_means_what_cron_users_mean() {
        for (field, want) in [
            ("1-5", "MON,TUE,WED,THU,FRI"),
            ("MON-FRI", "MON,TUE,WED,THU,FRI"),
            ("0", "SUN"),
            ("7", "SUN"),
            ("5-7", "SUN,FRI,SAT"),
            ("6,0", "SUN,SAT"),
            ("*/2", "SUN,TUE,THU,SAT"),
            ("1/2", "MON,WED,FRI"),
            ("sat,sun", "SUN,SAT"),
            ("*", "*"),
        ] {
            assert_eq!(day_names(field).as_deref(), Ok(want), "{field}");
        }
        for bad in ["8", "5-2", "MOO", "*/0"] {
            assert!(day_names(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_table() {
        // 2026-11-27 is a Friday, 2026-11-28 a Saturday, 2026-11-30 a Monday.
        let w = Window::parse("* 0-8,18-23 * * 1-5", None).unwrap();
        for (at, inside) in [
            ("2026-11-27T07:59:59Z", true),  // Friday morning
            ("2026-11-27T09:00:00Z", false), // Friday office hours
            ("2026-11-27T23:59:59Z", true),  // Friday, last second
            ("2026-11-28T03:00:00Z", false), // Saturday night: not MON-FRI
            ("2026-11-29T20:00:00Z", false), // Sunday evening (cron crate's 1 would be Sunday!)
            ("2026-11-30T00:00:00Z", true),  // Monday, first second
            ("2026-11-30T08:30:00Z", true),
        ] {
            assert_eq!(w.includes(utc(at)), inside, "{at}");
        }
        assert!(Window::parse("* * * *", None).unwrap_err().contains("5 cron fields"));
        // Each field's mistake in the person's own terms (not the 6-field form the cron crate reads).
        for (bad, says) in [
            ("* 25 * * *", "\"* 25 * * *\": hour: 25 is out of range 0-23"),
            ("* * 32 12 *", "\"* * 32 12 *\": day of month: 32 is out of range 1-31"),
            ("* * 1 DECEMBER *", "\"* * 1 DECEMBER *\": month: \"DECEMBER\" is not a number"),
            ("60 * * * *", "\"60 * * * *\": minute: 60 is out of range 0-59"),
            ("*/0 * * * *", "\"*/0 * * * *\": minute: a step of 0"),
            ("* 9-5 * * *", "\"* 9-5 * * *\": hour: range \"9-5\" runs backwards"),
        ] {
            assert_eq!(Window::parse(bad, None).unwrap_err(), says);
        }
        assert!(Window::parse("* * 24-26 DEC *", None).is_ok(), "month names work");
        assert!(Window::parse("* * * * *", Some("Mars/Olympus")).unwrap_err().contains("IANA timezone"));
    }

    #[test]
    fn windows_follow_the_timezone_across_dst() {
        // 09:00–16:59 on weekdays in Berlin: 08:00Z in winter (CET, +1), 07:00Z in summer (CEST, +2).
        let w = Window::parse("* 9-16 * * MON-FRI", Some("Europe/Berlin")).unwrap();
        assert!(w.includes(utc("2026-01-05T08:00:00Z")), "winter Monday 09:00 CET");
        assert!(!w.includes(utc("2026-01-05T07:30:00Z")), "winter Monday 08:30 CET");
        assert!(w.includes(utc("2026-07-06T07:00:00Z")), "summer Monday 09:00 CEST");
        assert!(!w.includes(utc("2026-07-06T15:00:00Z")), "summer Monday 17:00 CEST");
        // The spring-forward night: 02:00–02:59 does not exist on 2026-03-29 in Berlin.
        let night = Window::parse("* 2 * * *", Some("Europe/Berlin")).unwrap();
        assert!(!night.includes(utc("2026-03-29T01:30:00Z")), "01:30Z is 03:30 CEST");
        assert!(night.includes(utc("2026-03-28T01:30:00Z")), "01:30Z is 02:30 CET the day before");
        // A weekday boundary that only exists in local time: Sunday 23:30Z is Monday 00:30 in Berlin.
        let monday = Window::parse("* * * * MON", Some("Europe/Berlin")).unwrap();
        assert!(monday.includes(Utc.with_ymd_and_hms(2026, 11, 29, 23, 30, 0).unwrap()));
        assert!(
            !Window::parse("* * * * MON", None)
                .unwrap()
                .includes(Utc.with_ymd_and_hms(2026, 11, 29, 23, 30, 0).unwrap())
        );
    }
}
