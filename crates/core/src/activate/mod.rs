//! Activate: the moments a shop talks to a customer — a birthday, a favourite artist on tour, a
//! delivery — each checked against consent when the message goes.
//!
//! [`trigger`] says when a date-based moment is due in the person's time zone, [`guard`] decides
//! at send time whether a message goes, waits or is skipped and why, [`template`] renders the
//! message from the traits the purpose allows, [`suggest`] finds what else a buyer may like.
//! This module holds the campaign itself, validated as a whole before it is saved.
//!
//! # Design
//!
//! A campaign serves one purpose of the catalog, like a segment: its audience, its template's
//! traits and its sends are all bound by it. Every person a trigger selects becomes an
//! *occurrence* with a key (`2027` for a yearly birthday, the happening id for a tour, the
//! event's message id) that the store claims once, so nothing is sent twice across restarts and
//! nodes. Each step of an occurrence is then decided at its own time by the guards.

pub mod guard;
pub mod suggest;
pub mod template;
pub mod trigger;

use crate::catalog::Catalog;
use guard::{FrequencyCap, QuietHours};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use trigger::DateTrigger;

/// How a campaign reaches people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Email through SMTP.
    Email,
    /// Text message through the SMS provider.
    Sms,
    /// A postal card: a print-ready mailing list.
    Postal,
    /// A JSON POST to the shop's endpoint.
    Webhook,
}

impl Channel {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Postal => "postal",
            Channel::Webhook => "webhook",
        }
    }

    /// The trait holding the address this channel needs.
    pub fn address_trait(self) -> Option<&'static str> {
        match self {
            Channel::Email => Some("email"),
            Channel::Sms => Some("phone"),
            Channel::Postal => Some("address"),
            Channel::Webhook => None,
        }
    }
}

/// What starts a campaign for a person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A yearly date (birthday, anniversary of the first order, a birth in the household).
    Date(DateTrigger),
    /// An event the person did (`Order Delivered`), optionally with property conditions.
    Event {
        /// Event name.
        event: String,
        /// Conditions on its properties, in the segment language's JSON form.
        #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
        filter: Vec<crate::segment::query::Cond>,
    },
    /// Something that happened outside (a tour announced) matched to a list trait
    /// (`favorite_artists`).
    Happening {
        /// The kind of happening (`tour`).
        kind: String,
        /// The list trait it is matched against.
        field: String,
        /// Only people whose `city` is one of the happening's cities.
        #[serde(default)]
        near: bool,
    },
    /// Entering a saved segment.
    EnteredSegment {
        /// The segment's name.
        segment: String,
    },
    /// Leaving a saved segment (a lapsed customer, a withdrawn interest).
    LeftSegment {
        /// The segment's name.
        segment: String,
    },
}

/// One message of a campaign: the first goes when the trigger fires (after its delay), the
/// next ones after theirs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Hours after the trigger (first step) or after the previous step.
    #[serde(default)]
    pub delay_hours: u32,
    /// Sent only if this holds then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_if: Option<StepCondition>,
    /// Subject (email) and body, in French and English.
    pub template: serde_json::Value,
}

/// A condition a later step checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepCondition {
    /// The voucher of the first step was not redeemed.
    VoucherUnused,
    /// The person has not ordered since the trigger.
    NoOrderSince,
}

/// A voucher given with the first step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct VoucherSpec {
    /// Value in the shop's currency.
    pub value: f64,
    /// Days it stays valid.
    pub valid_days: u32,
}

/// A campaign as saved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    /// Unique name.
    pub name: String,
    /// The purpose it serves (a catalog id).
    pub purpose: String,
    /// How it reaches people.
    pub channel: Channel,
    /// What starts it.
    pub trigger: Trigger,
    /// Only members of this saved segment (checked at send time too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// The messages.
    pub steps: Vec<Step>,
    /// A voucher with the first message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voucher: Option<VoucherSpec>,
    /// No messages in these local hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// At most so many messages per channel and person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_cap: Option<FrequencyCap>,
    /// No messages after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<Timestamp>,
    /// Where the webhook channel posts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Whether soft opt-in applies (existing customers, analogous products) for email and SMS
    /// when the purpose is not consented: off unless the shop turns it on.
    #[serde(default)]
    pub soft_opt_in: bool,
}

/// Why a campaign cannot be saved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CampaignError {
    /// The field at fault.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn error(field: &str, message: impl Into<String>) -> CampaignError {
    CampaignError {
        field: field.into(),
        message: message.into(),
    }
}

impl Campaign {
    /// Checks the campaign against the catalog: the purpose exists, the trigger's trait or event
    /// is declared for it, the channel's address may be used for it, there is at least one step.
    pub fn check(&self, catalog: &Catalog) -> Result<(), CampaignError> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(error("name", "1 to 200 characters"));
        }
        let purpose = catalog
            .purposes
            .get(&self.purpose)
            .ok_or_else(|| error("purpose", format!("unknown purpose `{}`", self.purpose)))?;
        let trait_for = |field: &str, t: &str| -> Result<(), CampaignError> {
            let def = catalog
                .traits
                .get(t)
                .ok_or_else(|| error(field, format!("unknown trait `{t}`")))?;
            if def.purposes.contains(&purpose.id) {
                Ok(())
            } else {
                Err(error(
                    field,
                    format!(
                        "`{t}` may not be used for the purpose `{}` ({})",
                        purpose.id,
                        def.purposes.join(", ")
                    ),
                ))
            }
        };
        match &self.trigger {
            Trigger::Date(d) => trait_for("trigger.field", &d.field)?,
            Trigger::Happening { field, .. } => trait_for("trigger.field", field)?,
            Trigger::Event { event, .. } => {
                let def = catalog
                    .events
                    .get(event)
                    .ok_or_else(|| error("trigger.event", format!("unknown event `{event}`")))?;
                if !def.purposes.contains(&purpose.id) && !catalog.events.contains_key(event) {
                    return Err(error("trigger.event", format!("`{event}` is not declared")));
                }
            }
            Trigger::EnteredSegment { .. } | Trigger::LeftSegment { .. } => {}
        }
        if let Some(address) = self.channel.address_trait() {
            trait_for("channel", address)?;
        }
        if self.steps.is_empty() {
            return Err(error("steps", "a campaign sends at least one message"));
        }
        if self.steps.len() > 10 {
            return Err(error("steps", "at most 10 steps"));
        }
        if self.channel == Channel::Webhook
            && !self
                .webhook_url
                .as_deref()
                .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(error("webhook_url", "the webhook channel needs an http(s) URL"));
        }
        if self.steps[0].only_if.is_some() {
            return Err(error("steps[0].only_if", "the first message has no condition"));
        }
        if let Some(cap) = self.frequency_cap
            && (cap.max == 0 || cap.days == 0)
        {
            return Err(error("frequency_cap", "max and days are at least 1"));
        }
        if let Some(v) = self.voucher
            && !(v.value > 0.0 && v.valid_days > 0)
        {
            return Err(error("voucher", "a positive value and at least one day of validity"));
        }
        Ok(())
    }

    /// The catalog traits its templates may read: those declared for its purpose.
    pub fn allowed_traits(&self, catalog: &Catalog) -> std::collections::BTreeSet<String> {
        catalog
            .traits
            .values()
            .filter(|t| t.purposes.contains(&self.purpose))
            .map(|t| t.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn birthday() -> Campaign {
        serde_json::from_value(json!({
            "name": "Joyeux anniversaire",
            "purpose": "marketing_email",
            "channel": "email",
            "trigger": {"date": {"field": "birthday", "days_before": 3, "local_hour": 9}},
            "steps": [{"template": {"subject": {"fr": "Bon anniversaire"}, "body": {"fr": "…"}}}],
            "voucher": {"value": 10.0, "valid_days": 30},
            "quiet_hours": {"start": "21:00", "end": "08:00"},
            "frequency_cap": {"max": 2, "days": 7, "policy": "delay"}
        }))
        .unwrap()
    }

    #[test]
    fn a_campaign_is_checked_against_its_purpose() {
        let catalog = Catalog::builtin();
        assert_eq!(birthday().check(&catalog), Ok(()));
        let mut sms = birthday();
        sms.purpose = "analytics".into();
        let e = sms.check(&catalog).unwrap_err();
        assert_eq!(e.field, "trigger.field", "{e}");
        let mut none = birthday();
        none.steps.clear();
        assert_eq!(none.check(&catalog).unwrap_err().field, "steps");
        let allowed = birthday().allowed_traits(&catalog);
        assert!(allowed.contains("birthday") && allowed.contains("email"), "{allowed:?}");
        assert!(!allowed.contains("gender"), "gender is not declared for email offers");
    }
}
