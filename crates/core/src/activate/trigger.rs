//! When a date-based moment happens for one person: a birthday N days ahead at a local hour,
//! the anniversary of a first order.
//!
//! # Design
//!
//! A date trigger fires once a year per person. Its *occurrence* is keyed by the year of the
//! anniversary it celebrates (`2027` for the birthday on 3 March 2027, even when the message
//! goes out on 28 February): the store claims that key once, so a restart, a second node or a
//! scan that runs twice can never send twice.
//!
//! The instant is computed in the person's own time zone: the anniversary date of that year,
//! minus the days before, at the configured local hour, resolved by the time-zone database
//! (jiff), so "9 o'clock" stays 9 o'clock on both sides of a daylight-saving change. When the
//! local hour does not exist that day (a spring-forward gap), the first instant after the gap is
//! used; when it exists twice, the first one.
//!
//! People born on 29 February celebrate on 28 February in common years by default (the day
//! still in their birth month); the rule is a setting (`march_1`).

use jiff::civil::{Date, date};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

/// What a 29 February anniversary becomes in a common year.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeapDay {
    /// 28 February: the last day of the birth month.
    #[default]
    February28,
    /// 1 March: the day after 28 February.
    March1,
}

/// A yearly moment on a profile's date.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateTrigger {
    /// The date trait (`birthday`, `customer_since`, `household_birth`) or computed instant
    /// (`first_seen`).
    pub field: String,
    /// How many days before the anniversary the message goes.
    #[serde(default)]
    pub days_before: u16,
    /// Local hour (0–23) in the person's time zone.
    #[serde(default = "nine")]
    pub local_hour: u8,
    /// The 29 February rule.
    #[serde(default)]
    pub leap_day: LeapDay,
}

fn nine() -> u8 {
    9
}

/// The anniversary of `original` in `year`.
pub fn anniversary(original: Date, year: i16, rule: LeapDay) -> Option<Date> {
    if original.month() == 2 && original.day() == 29 && !date(year, 1, 1).in_leap_year() {
        return Some(match rule {
            LeapDay::February28 => date(year, 2, 28),
            LeapDay::March1 => date(year, 3, 1),
        });
    }
    Date::new(year, original.month(), original.day()).ok()
}

impl DateTrigger {
    /// When the occurrence celebrating the anniversary in `year` is due, in `tz`.
    pub fn due(&self, original: Date, year: i16, tz: &TimeZone) -> Option<Timestamp> {
        let day = anniversary(original, year, self.leap_day)?
            .checked_sub(i64::from(self.days_before).days())
            .ok()?;
        let local = day.at(self.local_hour.min(23) as i8, 0, 0, 0);
        // `compatible`: in a gap, the instant after it; in a fold, the earlier one.
        tz.to_ambiguous_zoned(local).compatible().ok().map(|z| z.timestamp())
    }

    /// The occurrences (year, instant) due in `(after, upto]`, in time order. A window a day or
    /// a year long is handled the same way.
    pub fn due_between(
        &self,
        original: Date,
        tz: &TimeZone,
        after: Timestamp,
        upto: Timestamp,
    ) -> Vec<(i16, Timestamp)> {
        if upto <= after {
            return Vec::new();
        }
        // The anniversary year lies after the send date by at most `days_before`: look one year
        // either side of the window's years.
        let first = after.to_zoned(tz.clone()).year().saturating_sub(1).max(original.year());
        let last = upto.to_zoned(tz.clone()).year().saturating_add(2);
        (first..=last)
            .filter(|y| *y > original.year() || self.days_before > 0 && *y == original.year())
            .filter_map(|y| self.due(original, y, tz).map(|t| (y, t)))
            .filter(|(_, t)| *t > after && *t <= upto)
            .collect()
    }
}

/// The people of `candidates` whose yearly date falls due in `(after, upto]`, with the
/// occurrence's year and instant in each person's time zone (`timezone` trait, else
/// `default`). Only the slots whose date falls on the window's days (shifted by the days
/// before, with 29 February in common years) are looked at.
pub fn due_in_index(
    index: &crate::segment::index::AudienceIndex,
    trigger: &DateTrigger,
    candidates: Option<&roaring::RoaringBitmap>,
    after: Timestamp,
    upto: Timestamp,
    default: &TimeZone,
) -> Vec<(i64, i16, Timestamp)> {
    let mut on_days = roaring::RoaringBitmap::new();
    // Every calendar day the window touches in any time zone (offsets lie within ±26 hours).
    let slack = jiff::SignedDuration::from_hours(26);
    let (Ok(first), Ok(last)) = (after.checked_sub(slack), upto.checked_add(slack)) else {
        return Vec::new();
    };
    let mut day = first.to_zoned(TimeZone::UTC).date();
    let last = last.to_zoned(TimeZone::UTC).date();
    while day <= last {
        let Ok(anniversary) = day.checked_add(i64::from(trigger.days_before).days()) else {
            break;
        };
        on_days |= index.on_day(&trigger.field, anniversary.month(), anniversary.day());
        let leap_day_lands_here = match trigger.leap_day {
            LeapDay::February28 => anniversary.month() == 2 && anniversary.day() == 28,
            LeapDay::March1 => anniversary.month() == 3 && anniversary.day() == 1,
        };
        if !anniversary.in_leap_year() && leap_day_lands_here {
            on_days |= index.on_day(&trigger.field, 2, 29);
        }
        let Ok(next) = day.tomorrow() else { break };
        day = next;
    }
    if let Some(c) = candidates {
        on_days &= c;
    }
    let mut out = Vec::new();
    for slot in &on_days {
        let Some(original) = index.date_of(&trigger.field, slot) else {
            continue;
        };
        let tz = zone_of(index.texts_of("timezone", slot).first().copied(), default);
        for (year, due) in trigger.due_between(original, &tz, after, upto) {
            out.push((index.profile(slot), year, due));
        }
    }
    out
}

/// The time zone of a profile: its `timezone` trait when it names a known zone, else the
/// shop's default.
pub fn zone_of(name: Option<&str>, default: &TimeZone) -> TimeZone {
    name.and_then(|n| TimeZone::get(n).ok())
        .unwrap_or_else(|| default.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(days_before: u16, hour: u8) -> DateTrigger {
        DateTrigger {
            field: "birthday".into(),
            days_before,
            local_hour: hour,
            leap_day: LeapDay::February28,
        }
    }

    fn paris() -> TimeZone {
        TimeZone::get("Europe/Paris").unwrap()
    }

    #[test]
    fn nine_o_clock_stays_nine_o_clock_across_daylight_saving() {
        let t = trigger(0, 9);
        // 30 March 2025 is the spring-forward day in Paris; 26 October the fall-back day.
        let spring = t.due(date(1990, 3, 30), 2025, &paris()).unwrap();
        assert_eq!(spring.to_string(), "2025-03-30T07:00:00Z");
        let winter = t.due(date(1990, 1, 15), 2025, &paris()).unwrap();
        assert_eq!(winter.to_string(), "2025-01-15T08:00:00Z");
        let autumn = t.due(date(1990, 10, 26), 2025, &paris()).unwrap();
        assert_eq!(autumn.to_string(), "2025-10-26T08:00:00Z");
        let montreal = t.due(date(1990, 7, 1), 2025, &TimeZone::get("America/Montreal").unwrap());
        assert_eq!(montreal.unwrap().to_string(), "2025-07-01T13:00:00Z");
    }

    #[test]
    fn an_hour_inside_the_spring_gap_moves_after_it() {
        // 2:30 does not exist in Paris on 30 March 2025.
        let mut t = trigger(0, 2);
        t.local_hour = 2;
        let due = t.due(date(1990, 3, 30), 2025, &paris()).unwrap();
        assert_eq!(
            due.to_string(),
            "2025-03-30T01:00:00Z",
            "03:00 local, right after the gap"
        );
    }

    #[test]
    fn leap_day_birthdays_are_celebrated_once_every_year() {
        let born = date(1996, 2, 29);
        let t = trigger(0, 9);
        assert_eq!(t.due(born, 2027, &paris()).unwrap().to_string(), "2027-02-28T08:00:00Z");
        assert_eq!(t.due(born, 2028, &paris()).unwrap().to_string(), "2028-02-29T08:00:00Z");
        let march = DateTrigger {
            leap_day: LeapDay::March1,
            ..t.clone()
        };
        assert_eq!(
            march.due(born, 2027, &paris()).unwrap().to_string(),
            "2027-03-01T08:00:00Z"
        );
        // Over eight years, exactly eight occurrences.
        let all = t.due_between(
            born,
            &paris(),
            "2024-12-31T23:00:00Z".parse().unwrap(),
            "2032-12-31T23:00:00Z".parse().unwrap(),
        );
        assert_eq!(
            all.iter().map(|(y, _)| *y).collect::<Vec<_>>(),
            (2025..=2032).collect::<Vec<_>>()
        );
    }

    #[test]
    fn days_before_cross_the_new_year_and_keep_the_anniversary_year() {
        let t = trigger(7, 10);
        let due = t.due_between(
            date(2000, 1, 3),
            &paris(),
            "2026-12-20T00:00:00Z".parse().unwrap(),
            "2026-12-31T00:00:00Z".parse().unwrap(),
        );
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, 2027, "the occurrence is the 2027 birthday");
        assert_eq!(due[0].1.to_string(), "2026-12-27T09:00:00Z");
        assert!(
            t.due_between(
                date(2000, 1, 3),
                &paris(),
                "2026-12-27T09:00:00Z".parse().unwrap(),
                Timestamp::MAX
            )
            .iter()
            .all(|(y, _)| *y >= 2028),
            "a window starting at the instant excludes it"
        );
    }

    #[test]
    fn unknown_zones_fall_back_to_the_default() {
        assert_eq!(zone_of(Some("Mars/Olympus"), &paris()), paris());
        assert_eq!(
            zone_of(Some("America/Montreal"), &paris()),
            TimeZone::get("America/Montreal").unwrap()
        );
    }
}
