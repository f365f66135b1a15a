//! The guards every message passes at send time, not only when its audience was computed.
//!
//! # Design
//!
//! Between the moment a person entered a campaign and the moment its message goes, they may
//! have withdrawn, objected, been restricted, been messaged three times already, or be asleep.
//! [`decide`] looks at the facts *at send time* and says send, skip (with the reason) or delay
//! (until when, and why); the caller records every decision, so the person's timeline and the
//! campaign's figures show each skip with its reason.
//!
//! The checks run in a fixed order, the legal ones first: a message without a legal basis is
//! skipped as such even if it would also have hit the frequency cap.

use jiff::Timestamp;
use jiff::civil::Time;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

/// What happens to one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Decision {
    /// It goes now.
    Send,
    /// It never goes.
    Skip {
        /// Why.
        reason: Reason,
    },
    /// It goes later.
    Delay {
        /// When to try again.
        until: Timestamp,
        /// Why.
        reason: Reason,
    },
}

/// Why a message did not go (now).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The campaign ended.
    CampaignEnded,
    /// No legal basis for the campaign's purpose now (no consent, or withdrawn).
    NoLegalBasis,
    /// The person objected to direct marketing.
    Objected,
    /// Processing is restricted.
    Restricted,
    /// On the suppression list (erased or opted out for good).
    Suppressed,
    /// No address for the channel (no email, no phone, no postal address).
    NoAddress,
    /// The frequency cap for the channel is reached.
    FrequencyCap,
    /// Inside the quiet hours in the person's time zone.
    QuietHours,
    /// This occurrence was already handled.
    AlreadySent,
}

impl Reason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CampaignEnded => "campaign_ended",
            Reason::NoLegalBasis => "no_legal_basis",
            Reason::Objected => "objected",
            Reason::Restricted => "restricted",
            Reason::Suppressed => "suppressed",
            Reason::NoAddress => "no_address",
            Reason::FrequencyCap => "frequency_cap",
            Reason::QuietHours => "quiet_hours",
            Reason::AlreadySent => "already_sent",
        }
    }
}

/// What to do when the frequency cap is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapPolicy {
    /// Drop the message.
    #[default]
    Skip,
    /// Send it when the cap allows again.
    Delay,
}

/// At most `max` messages per channel in any `days`-day window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrequencyCap {
    /// Messages allowed.
    pub max: u32,
    /// Window, in days.
    pub days: u32,
    /// What happens beyond it.
    #[serde(default)]
    pub policy: CapPolicy,
}

/// No messages between `start` and `end`, local time (may span midnight).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    /// Local start, e.g. 21:00.
    pub start: Time,
    /// Local end, e.g. 08:00.
    pub end: Time,
}

impl QuietHours {
    /// When the quiet period containing `at` ends, if `at` is inside one.
    pub fn ends_after(&self, at: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = at.to_zoned(tz.clone());
        let now = local.time();
        let inside = if self.start <= self.end {
            now >= self.start && now < self.end
        } else {
            now >= self.start || now < self.end
        };
        if !inside {
            return None;
        }
        let mut day = local.date();
        if self.start > self.end && now >= self.start {
            day = day.tomorrow().ok()?;
        }
        tz.to_ambiguous_zoned(day.to_datetime(self.end))
            .compatible()
            .ok()
            .map(|z| z.timestamp())
    }
}

/// The facts about one person and one message at send time.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// Now.
    pub now: Timestamp,
    /// The campaign's end, if any.
    pub ends_at: Option<Timestamp>,
    /// Whether the person has a legal basis for the campaign's purpose now.
    pub lawful: bool,
    /// Whether they objected to direct marketing.
    pub objected: bool,
    /// Whether processing is restricted.
    pub restricted: bool,
    /// Whether one of their identifiers is on the suppression list.
    pub suppressed: bool,
    /// Whether there is an address for the channel.
    pub has_address: bool,
    /// When earlier messages on this channel went to them (any campaign).
    pub recent_sends: &'a [Timestamp],
    /// Their time zone.
    pub tz: &'a TimeZone,
}

/// The rules of one campaign.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rules {
    /// Frequency cap per channel.
    pub cap: Option<FrequencyCap>,
    /// Quiet hours.
    pub quiet: Option<QuietHours>,
}

/// Send, skip or delay one message.
pub fn decide(f: &Facts<'_>, rules: &Rules) -> Decision {
    let skip = |reason| Decision::Skip { reason };
    if f.ends_at.is_some_and(|end| f.now >= end) {
        return skip(Reason::CampaignEnded);
    }
    if f.restricted {
        return skip(Reason::Restricted);
    }
    if f.objected {
        return skip(Reason::Objected);
    }
    if !f.lawful {
        return skip(Reason::NoLegalBasis);
    }
    if f.suppressed {
        return skip(Reason::Suppressed);
    }
    if !f.has_address {
        return skip(Reason::NoAddress);
    }
    if let Some(cap) = rules.cap {
        let window = jiff::SignedDuration::from_hours(24 * i64::from(cap.days));
        let mut within: Vec<Timestamp> = f
            .recent_sends
            .iter()
            .copied()
            .filter(|t| *t > f.now - window && *t <= f.now)
            .collect();
        if within.len() >= cap.max as usize {
            return match cap.policy {
                CapPolicy::Skip => skip(Reason::FrequencyCap),
                CapPolicy::Delay => {
                    // The next slot: when enough of the window's sends have aged out.
                    within.sort();
                    let oldest_blocking = within[within.len() - cap.max as usize];
                    Decision::Delay {
                        until: oldest_blocking + window,
                        reason: Reason::FrequencyCap,
                    }
                }
            };
        }
    }
    if let Some(until) = rules.quiet.and_then(|q| q.ends_after(f.now, f.tz)) {
        return Decision::Delay {
            until,
            reason: Reason::QuietHours,
        };
    }
    Decision::Send
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn facts<'a>(now: &str, sends: &'a [Timestamp], tz: &'a TimeZone) -> Facts<'a> {
        Facts {
            now: at(now),
            ends_at: None,
            lawful: true,
            objected: false,
            restricted: false,
            suppressed: false,
            has_address: true,
            recent_sends: sends,
            tz,
        }
    }

    #[test]
    fn legal_reasons_come_first() {
        let tz = TimeZone::UTC;
        let sends = [at("2026-05-01T10:00:00Z")];
        let rules = Rules {
            cap: Some(FrequencyCap {
                max: 1,
                days: 7,
                policy: CapPolicy::Skip,
            }),
            quiet: None,
        };
        let mut f = facts("2026-05-02T10:00:00Z", &sends, &tz);
        assert_eq!(
            decide(&f, &rules),
            Decision::Skip {
                reason: Reason::FrequencyCap
            }
        );
        f.lawful = false;
        assert_eq!(
            decide(&f, &rules),
            Decision::Skip {
                reason: Reason::NoLegalBasis
            }
        );
        f.objected = true;
        assert_eq!(
            decide(&f, &rules),
            Decision::Skip {
                reason: Reason::Objected
            }
        );
        f.restricted = true;
        assert_eq!(
            decide(&f, &rules),
            Decision::Skip {
                reason: Reason::Restricted
            }
        );
    }

    #[test]
    fn a_capped_message_waits_for_the_next_allowed_slot() {
        let tz = TimeZone::UTC;
        let sends = [at("2026-05-01T10:00:00Z"), at("2026-05-03T10:00:00Z")];
        let rules = Rules {
            cap: Some(FrequencyCap {
                max: 2,
                days: 7,
                policy: CapPolicy::Delay,
            }),
            quiet: None,
        };
        let f = facts("2026-05-04T10:00:00Z", &sends, &tz);
        assert_eq!(
            decide(&f, &rules),
            Decision::Delay {
                until: at("2026-05-08T10:00:00Z"),
                reason: Reason::FrequencyCap
            }
        );
        let later = facts("2026-05-08T10:00:01Z", &sends, &tz);
        assert_eq!(decide(&later, &rules), Decision::Send);
    }

    #[test]
    fn quiet_hours_are_local_and_may_span_midnight() {
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let quiet = QuietHours {
            start: Time::constant(21, 0, 0, 0),
            end: Time::constant(8, 0, 0, 0),
        };
        let rules = Rules {
            cap: None,
            quiet: Some(quiet),
        };
        // 22:30 in Paris (summer, UTC+2) waits until 08:00 the next morning.
        let f = facts("2026-07-01T20:30:00Z", &[], &paris);
        assert_eq!(
            decide(&f, &rules),
            Decision::Delay {
                until: at("2026-07-02T06:00:00Z"),
                reason: Reason::QuietHours
            }
        );
        // 06:00 local waits until 08:00 the same day.
        let early = facts("2026-07-02T04:00:00Z", &[], &paris);
        assert!(matches!(decide(&early, &rules), Decision::Delay { until, .. } if until == at("2026-07-02T06:00:00Z")));
        let noon = facts("2026-07-02T10:00:00Z", &[], &paris);
        assert_eq!(decide(&noon, &rules), Decision::Send);
    }
}
