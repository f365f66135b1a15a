//! Data-subject requests (GDPR Art. 12, 15–21): their workflow and their legal deadlines.
//!
//! # Design
//!
//! A request is a persisted task that moves through `received → verifying → in_progress →
//! done`, or ends `refused` (with reasons and the right to complain). Its deadline is one
//! *calendar month* after receipt (Art. 12(3)), computed in the controller's time zone with
//! calendar arithmetic: a request received on 31 January is due at the end of February (28th or
//! 29th), not on 3 March. The deadline may be extended once, by up to two more months, only
//! with a recorded reason and only while the first month is still running (the subject must be
//! told within it). Every step is kept, so the request can prove it was handled on time.

use crate::error::{Error, ErrorCode};
use jiff::{Span, Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};

/// What stands for a subject's value, and for the values they asked to correct, in the record
/// of a request once the subject was erased.
pub const ERASED: &str = "erased";

/// The rights a request exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Right {
    /// Art. 15: a copy of the data and how it is used.
    Access,
    /// Art. 20: the data in a machine-readable form.
    Portability,
    /// Art. 16: correct inaccurate data.
    Rectification,
    /// Art. 17: erase the data.
    Erasure,
    /// Art. 18: keep the data but stop using it.
    Restriction,
    /// Art. 21: stop a processing, marketing first of all.
    Objection,
}

impl Right {
    /// Every right.
    pub const ALL: [Right; 6] = [
        Self::Access,
        Self::Portability,
        Self::Rectification,
        Self::Erasure,
        Self::Restriction,
        Self::Objection,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Portability => "portability",
            Self::Rectification => "rectification",
            Self::Erasure => "erasure",
            Self::Restriction => "restriction",
            Self::Objection => "objection",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            Error::new(
                ErrorCode::InvalidField,
                format!(
                    "unknown request type `{s}`: access, portability, rectification, erasure, restriction or objection"
                ),
            )
        })
    }
}

/// Where a request is in its workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Received, not yet looked at.
    Received,
    /// Waiting for the subject to prove who they are.
    Verifying,
    /// Identity established; being carried out.
    InProgress,
    /// Carried out, and the subject told.
    Done,
    /// Refused, with reasons and the right to complain to the CNIL.
    Refused,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Verifying => "verifying",
            Self::InProgress => "in_progress",
            Self::Done => "done",
            Self::Refused => "refused",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Received,
            Self::Verifying,
            Self::InProgress,
            Self::Done,
            Self::Refused,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// Whether the request is closed.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Refused)
    }
}

/// The controller's time zone, in which calendar months are counted.
pub fn controller_tz() -> TimeZone {
    TimeZone::get("Europe/Paris").unwrap_or(TimeZone::UTC)
}

fn add_months(t: Timestamp, months: i64, tz: &TimeZone) -> Timestamp {
    // jiff clamps to the last day of a shorter month: 31 January + 1 month = 28/29 February.
    t.to_zoned(tz.clone())
        .checked_add(Span::new().months(months))
        .map_or(t, |z| z.timestamp())
}

/// The deadline of a request received at `received`: one calendar month later (Art. 12(3)).
pub fn due_at(received: Timestamp, tz: &TimeZone) -> Timestamp {
    add_months(received, 1, tz)
}

/// The latest deadline an extension may set: two more months (Art. 12(3)).
pub fn max_extended_due(received: Timestamp, tz: &TimeZone) -> Timestamp {
    add_months(received, 3, tz)
}

/// Checks an extension asked at `now` for a request received at `received`, to `until`.
pub fn check_extension(
    received: Timestamp,
    now: Timestamp,
    until: Timestamp,
    reason: &str,
    tz: &TimeZone,
) -> Result<(), Error> {
    let invalid = |m: &str| Error::new(ErrorCode::InvalidField, m);
    if reason.trim().len() < 10 {
        return Err(invalid(
            "an extension needs its reason, told to the subject (Art. 12(3))",
        ));
    }
    if now >= due_at(received, tz) {
        return Err(invalid(
            "an extension must be decided, and the subject told, within the first month",
        ));
    }
    if until <= due_at(received, tz) || until > max_extended_due(received, tz) {
        return Err(invalid(
            "an extension adds at most two months to the one-month deadline",
        ));
    }
    Ok(())
}

/// How close a deadline is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// Past its deadline and still open.
    Overdue,
    /// Due within the next `days`.
    DueSoon,
    /// Neither.
    OnTime,
}

/// How close an open request is to its deadline at `now`; "soon" is within `soon_days` days.
pub fn urgency(due: Timestamp, now: Timestamp, soon_days: i64) -> Urgency {
    if now > due {
        Urgency::Overdue
    } else if due.as_second() - now.as_second() <= soon_days * 86_400 {
        Urgency::DueSoon
    } else {
        Urgency::OnTime
    }
}

/// Whether a request may move from `from` to `to`.
pub fn may_move(from: Status, to: Status) -> bool {
    use Status::*;
    matches!(
        (from, to),
        (Received, Verifying)
            | (Received, InProgress)
            | (Verifying, InProgress)
            | (InProgress, Done)
            | (Received | Verifying | InProgress, Refused)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paris(s: &str) -> Timestamp {
        s.parse::<jiff::civil::DateTime>()
            .unwrap()
            .to_zoned(controller_tz())
            .unwrap()
            .timestamp()
    }

    #[test]
    fn one_calendar_month_clamped_at_month_ends() {
        let tz = controller_tz();
        assert_eq!(due_at(paris("2026-01-31T10:00"), &tz), paris("2026-02-28T10:00"));
        assert_eq!(
            due_at(paris("2028-01-31T10:00"), &tz),
            paris("2028-02-29T10:00"),
            "leap year"
        );
        assert_eq!(due_at(paris("2026-03-31T10:00"), &tz), paris("2026-04-30T10:00"));
        assert_eq!(due_at(paris("2026-02-15T10:00"), &tz), paris("2026-03-15T10:00"));
        // Across the change to summer time, the local hour is kept.
        assert_eq!(due_at(paris("2026-03-10T09:00"), &tz), paris("2026-04-10T09:00"));
        assert_eq!(
            max_extended_due(paris("2026-11-30T10:00"), &tz),
            paris("2027-02-28T10:00")
        );
    }

    #[test]
    fn an_extension_needs_a_reason_and_the_first_month() {
        let tz = controller_tz();
        let received = paris("2026-01-31T10:00");
        let until = paris("2026-04-30T10:00");
        assert!(
            check_extension(
                received,
                paris("2026-02-20T10:00"),
                until,
                "many requests this month",
                &tz
            )
            .is_ok()
        );
        assert!(check_extension(received, paris("2026-02-20T10:00"), until, "", &tz).is_err());
        assert!(
            check_extension(
                received,
                paris("2026-02-28T10:00"),
                until,
                "many requests this month",
                &tz
            )
            .is_err()
        );
        assert!(
            check_extension(
                received,
                paris("2026-02-20T10:00"),
                paris("2026-05-01T10:00"),
                "many requests this month",
                &tz
            )
            .is_err()
        );
    }

    #[test]
    fn urgency_and_moves() {
        let due = paris("2026-03-01T00:00");
        assert_eq!(urgency(due, paris("2026-03-02T00:00"), 7), Urgency::Overdue);
        assert_eq!(urgency(due, paris("2026-02-25T00:00"), 7), Urgency::DueSoon);
        assert_eq!(urgency(due, paris("2026-02-01T00:00"), 7), Urgency::OnTime);
        assert!(may_move(Status::Received, Status::Verifying));
        assert!(!may_move(Status::Done, Status::InProgress));
        assert!(!may_move(Status::Refused, Status::Done));
    }
}

/// One step of a request's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// When.
    pub at: Timestamp,
    /// The status it moved to (or kept, for a note).
    pub status: Status,
    /// Who: `token:<name>`, `subject`, `system`.
    pub actor: String,
    /// What happened, in plain words.
    pub note: String,
}

/// A deadline extension (Art. 12(3)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Extension {
    /// The new deadline.
    pub until: Timestamp,
    /// Why, as told to the subject.
    pub reason: String,
    /// When it was decided (and the subject told).
    pub decided_at: Timestamp,
}

/// A data-subject request, as persisted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Store-assigned id.
    pub id: i64,
    /// Which right.
    #[serde(rename = "type")]
    pub right: Right,
    /// The subject's identifier kind.
    pub subject_type: crate::consent::IdKind,
    /// The subject's identifier (personal data).
    pub subject_value: String,
    /// Where it is.
    pub status: Status,
    /// How it came in: `api`, `staff`, `preference_centre`.
    pub origin: String,
    /// Whether the subject's identity is established.
    pub verified: bool,
    /// When it was received.
    pub received_at: Timestamp,
    /// When it is due (one calendar month, or the extension's date).
    pub due_at: Timestamp,
    /// The extension, if one was decided.
    pub extension: Option<Extension>,
    /// Why it was refused, if it was.
    pub refusal: Option<String>,
    /// What the request asks precisely (purposes objected to, traits to rectify…).
    pub details: serde_json::Value,
    /// Every step, oldest first.
    pub steps: Vec<Step>,
    /// The pending identity check, when one was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

/// A one-time code sent to a channel already known for the subject (Art. 12(6)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Keyed hash of the code (the code itself is never stored).
    #[serde(rename = "code_hash")]
    pub hash: String,
    /// Where it was sent: `email` or `sms`.
    pub channel: String,
    /// When it stops being valid.
    pub expires_at: Timestamp,
    /// Wrong codes tried so far.
    pub attempts: u32,
}

/// How many wrong codes a verification tolerates.
pub const MAX_ATTEMPTS: u32 = 5;
/// How long a code stays valid, in minutes.
pub const CODE_MINUTES: i64 = 15;

/// How many times a recipient is sent an Art. 19 notice before staff are asked to tell it
/// another way.
pub const NOTICE_ATTEMPTS: u32 = 10;

/// How long after its `attempts`-th failed try an Art. 19 notice is tried again: 1 minute, then
/// five times longer each time up to 12 hours (1, 5, 25 minutes, about 2 hours, 10 hours, then
/// every 12 hours: about two and a half days in all); none once [`NOTICE_ATTEMPTS`] are spent.
pub fn notice_retry_after(attempts: u32) -> Option<jiff::SignedDuration> {
    if attempts == 0 || attempts >= NOTICE_ATTEMPTS {
        return None;
    }
    let minutes = 5i64.saturating_pow(attempts - 1).min(12 * 60);
    Some(jiff::SignedDuration::from_mins(minutes))
}

/// Why a code was not accepted. The request is unchanged in every case but the counting of a
/// wrong attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No code is pending for this request.
    #[error("no confirmation is pending for this request")]
    NotPending,
    /// The code is past its expiry.
    #[error("the code has expired; ask for a new one")]
    Expired,
    /// Too many wrong codes.
    #[error("too many wrong codes; ask for a new one")]
    TooManyAttempts,
    /// Not the code sent.
    #[error("the code is not the one sent")]
    Wrong,
}

impl Request {
    /// A request received now. Entered by staff, or through a signed preference-centre link,
    /// it counts as verified and goes straight to work; otherwise the subject must first prove
    /// who they are.
    #[allow(clippy::too_many_arguments)]
    pub fn receive(
        right: Right,
        subject: &crate::consent::Subject,
        origin: &str,
        verified: bool,
        details: serde_json::Value,
        actor: &str,
        now: Timestamp,
        tz: &TimeZone,
    ) -> Request {
        let status = if verified {
            Status::InProgress
        } else {
            Status::Verifying
        };
        let note = if verified {
            format!("received from {origin}; identity established")
        } else {
            format!("received from {origin}; waiting for the subject to confirm who they are")
        };
        Request {
            id: 0,
            right,
            subject_type: subject.kind(),
            subject_value: subject.value().to_owned(),
            status,
            origin: origin.to_owned(),
            verified,
            received_at: now,
            due_at: due_at(now, tz),
            extension: None,
            refusal: None,
            details,
            steps: vec![Step {
                at: now,
                status,
                actor: actor.to_owned(),
                note,
            }],
            verification: None,
        }
    }

    /// Records that a code (its keyed hash) was sent through `channel`.
    pub fn code_sent(&mut self, hash: String, channel: &str, now: Timestamp) {
        self.verification = Some(Verification {
            hash,
            channel: channel.to_owned(),
            expires_at: now
                .checked_add(jiff::SignedDuration::from_mins(CODE_MINUTES))
                .unwrap_or(now),
            attempts: 0,
        });
        self.steps.push(Step {
            at: now,
            status: self.status,
            actor: "system".into(),
            note: format!("a confirmation code was sent by {channel}"),
        });
    }

    /// Checks a code (its keyed hash); on success the request is verified and in progress.
    pub fn verify(&mut self, hash: &str, now: Timestamp) -> Result<(), VerifyError> {
        let v = self
            .verification
            .as_mut()
            .filter(|_| self.status == Status::Verifying)
            .ok_or(VerifyError::NotPending)?;
        if v.attempts >= MAX_ATTEMPTS {
            return Err(VerifyError::TooManyAttempts);
        }
        if now >= v.expires_at {
            return Err(VerifyError::Expired);
        }
        let same: bool = subtle::ConstantTimeEq::ct_eq(v.hash.as_bytes(), hash.as_bytes()).into();
        if !same {
            v.attempts += 1;
            return Err(VerifyError::Wrong);
        }
        self.verification = None;
        self.verified = true;
        self.advance(
            Status::InProgress,
            "subject",
            "identity confirmed with the code sent",
            now,
        )
        .map_err(|_| VerifyError::NotPending)
    }

    /// Moves the request, recording the step; refuses moves the workflow does not allow.
    pub fn advance(&mut self, to: Status, actor: &str, note: impl Into<String>, now: Timestamp) -> Result<(), Error> {
        if !may_move(self.status, to) {
            return Err(Error::new(
                ErrorCode::InvalidField,
                format!("a request {} cannot become {}", self.status.as_str(), to.as_str()),
            ));
        }
        self.status = to;
        self.steps.push(Step {
            at: now,
            status: to,
            actor: actor.to_owned(),
            note: note.into(),
        });
        Ok(())
    }

    /// Extends the deadline, with the reason told to the subject.
    pub fn extend(
        &mut self,
        until: Timestamp,
        reason: &str,
        actor: &str,
        now: Timestamp,
        tz: &TimeZone,
    ) -> Result<(), Error> {
        if self.status.is_final() || self.extension.is_some() {
            return Err(Error::new(
                ErrorCode::InvalidField,
                "only an open request, once, can be extended",
            ));
        }
        check_extension(self.received_at, now, until, reason, tz)?;
        self.extension = Some(Extension {
            until,
            reason: reason.to_owned(),
            decided_at: now,
        });
        self.due_at = until;
        self.steps.push(Step {
            at: now,
            status: self.status,
            actor: actor.to_owned(),
            note: format!("deadline extended to {until}: {reason}"),
        });
        Ok(())
    }

    /// Refuses the request, with reasons and the right to complain to the CNIL (Art. 12(4)).
    pub fn refuse(&mut self, reason: &str, actor: &str, now: Timestamp) -> Result<(), Error> {
        if reason.trim().len() < 10 {
            return Err(Error::new(
                ErrorCode::InvalidField,
                "a refusal states its reasons (Art. 12(4))",
            ));
        }
        self.refusal = Some(format!(
            "{reason} — You may lodge a complaint with the CNIL (www.cnil.fr) and seek a judicial remedy."
        ));
        self.advance(Status::Refused, actor, format!("refused: {reason}"), now)
    }
}

#[cfg(test)]
mod verification_tests {
    use super::*;
    use crate::consent::{IdKind, Subject};

    #[test]
    fn wrong_expired_and_exhausted_codes_change_nothing_but_the_count() {
        let tz = controller_tz();
        let now: Timestamp = "2026-03-01T10:00:00Z".parse().unwrap();
        let ana = Subject::parse(IdKind::Email, "ana@example.org").unwrap();
        let mut r = Request::receive(
            Right::Access,
            &ana,
            "api",
            false,
            serde_json::Value::Null,
            "subject",
            now,
            &tz,
        );
        assert_eq!(r.verify("h", now), Err(VerifyError::NotPending));
        r.code_sent("right".into(), "email", now);
        assert_eq!(r.verify("wrong", now), Err(VerifyError::Wrong));
        assert_eq!(
            (r.status, r.verification.as_ref().unwrap().attempts),
            (Status::Verifying, 1)
        );
        let later = now.checked_add(jiff::SignedDuration::from_mins(16)).unwrap();
        assert_eq!(r.verify("right", later), Err(VerifyError::Expired));
        for _ in 0..4 {
            let _ = r.verify("wrong", now);
        }
        assert_eq!(
            r.verify("right", now),
            Err(VerifyError::TooManyAttempts),
            "even the right code, after five wrong ones"
        );
        assert_eq!(r.status, Status::Verifying);
        r.code_sent("fresh".into(), "email", now);
        assert_eq!(r.verify("fresh", now), Ok(()));
        assert_eq!((r.status, r.verified), (Status::InProgress, true));
    }

    #[test]
    fn a_notice_is_retried_ever_later_then_given_up() {
        let minutes: Vec<i64> = (1..NOTICE_ATTEMPTS)
            .map(|n| notice_retry_after(n).unwrap().as_mins())
            .collect();
        assert_eq!(minutes, [1, 5, 25, 125, 625, 720, 720, 720, 720]);
        assert_eq!(
            notice_retry_after(NOTICE_ATTEMPTS),
            None,
            "the last attempt is the last"
        );
        let total: i64 = minutes.iter().sum();
        assert!((2 * 24 * 60..3 * 24 * 60).contains(&total), "{total} minutes");
    }
}
