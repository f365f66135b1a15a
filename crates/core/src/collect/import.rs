//! CSV imports from tills (point of sale) and CRM exports.
//!
//! # Design
//!
//! A row becomes one message, built from a [`Mapping`] (which column feeds which message field)
//! and then normalised like any other message, so an import obeys the catalog exactly as the
//! tracking API does. A row is all or nothing: any problem rejects the whole row with its line
//! number and a reason, and no part of it is stored.
//!
//! Re-running an import must not duplicate anything. Each row's `messageId` is therefore
//! derived from its content (or from a declared id column, such as a till's ticket number), and
//! the event log ignores a `messageId` it already holds for the source.
//!
//! Cells are text; they are converted to the type the catalog declares for their target, with
//! the French conventions tills use (`12,50` for 12.50, `oui`/`non`, `31/01/2026`).

use super::MessageType;
use crate::catalog::{Catalog, ValueType};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// How a CSV file maps onto messages. Read from a TOML `--mapping` file, or guessed from the
/// header.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// `track` (one event per row) or `identify` (one profile update per row).
    #[serde(rename = "type")]
    pub kind: MappingKind,
    /// A fixed event name for every row of a `track` import.
    #[serde(default)]
    pub event: Option<String>,
    /// `column name = target`, where target is `userId`, `anonymousId`, `messageId`, `event`,
    /// `timestamp`, `traits.NAME`, `properties.NAME` or `context.traits.NAME`.
    pub columns: BTreeMap<String, String>,
    /// A jiff strftime format for timestamps that are not ISO-8601, e.g. `%d/%m/%Y %H:%M`.
    #[serde(default)]
    pub timestamp_format: Option<String>,
    /// The time zone of timestamps written without an offset (default `Europe/Paris`).
    #[serde(default)]
    pub timezone: Option<String>,
}

/// The kind of message a row becomes.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MappingKind {
    /// One `track` per row.
    Track,
    /// One `identify` per row.
    Identify,
}

const TOP_LEVEL: [(&str, &str); 10] = [
    ("user_id", "userId"),
    ("userid", "userId"),
    ("anonymous_id", "anonymousId"),
    ("anonymousid", "anonymousId"),
    ("message_id", "messageId"),
    ("messageid", "messageId"),
    ("event", "event"),
    ("timestamp", "timestamp"),
    ("date", "timestamp"),
    ("type", "type"),
];

impl Mapping {
    /// Parses a mapping file.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| format!("invalid mapping: {}", e.message()))
    }

    /// Guesses a mapping from a header: id, event and time columns by their usual names; every
    /// other column is a property of a `track` import when there is an `event` column, and a
    /// trait of an `identify` import otherwise.
    pub fn guess(header: &[String]) -> Self {
        let lower: Vec<String> = header.iter().map(|h| h.trim().to_lowercase()).collect();
        let has_event = lower.iter().any(|h| h == "event");
        let kind = if has_event {
            MappingKind::Track
        } else {
            MappingKind::Identify
        };
        let mut columns = BTreeMap::new();
        for (original, l) in header.iter().zip(&lower) {
            let target = match TOP_LEVEL.iter().find(|(name, _)| name == l) {
                Some((_, target)) => (*target).to_owned(),
                None if kind == MappingKind::Track => format!("properties.{}", original.trim()),
                None => format!("traits.{}", original.trim()),
            };
            columns.insert(original.clone(), target);
        }
        Mapping {
            kind,
            event: None,
            columns,
            timestamp_format: None,
            timezone: None,
        }
    }

    /// Checks that every column named by the mapping is in the header.
    pub fn check_header(&self, header: &[String]) -> Result<(), String> {
        let missing: Vec<&str> = self
            .columns
            .keys()
            .filter(|c| !header.iter().any(|h| h == *c))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("the file has no column {}", missing.join(", ")))
        }
    }
}

/// Converts one CSV cell to the declared type.
fn convert(cell: &str, ty: ValueType) -> Result<Value, String> {
    let cell = cell.trim();
    let number = |s: &str| s.replace([' ', '\u{a0}'], "").replace(',', ".");
    match ty {
        ValueType::Number => number(cell)
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| "is not a number".to_owned()),
        ValueType::Integer => number(cell)
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| "is not a whole number".to_owned()),
        ValueType::Boolean => match cell.to_lowercase().as_str() {
            "true" | "vrai" | "oui" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "faux" | "non" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err("is not a yes/no value".to_owned()),
        },
        ValueType::Date => parse_date(cell)
            .map(|d| Value::String(d.to_string()))
            .ok_or_else(|| "is not a date (YYYY-MM-DD or DD/MM/YYYY)".to_owned()),
        ValueType::Array => Ok(Value::Array(
            cell.split(['|', ';'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        )),
        ValueType::Object => serde_json::from_str::<Value>(cell)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| "is not a JSON object".to_owned()),
        _ => Ok(Value::String(cell.to_owned())),
    }
}

fn parse_date(s: &str) -> Option<jiff::civil::Date> {
    s.parse()
        .ok()
        .or_else(|| jiff::civil::Date::strptime("%d/%m/%Y", s).ok())
}

/// Turns rows into raw messages for one source.
pub struct RowMapper<'a> {
    mapping: &'a Mapping,
    catalog: &'a Catalog,
    source: &'a str,
    tz: jiff::tz::TimeZone,
}

impl<'a> RowMapper<'a> {
    /// A mapper for imports into `source`.
    pub fn new(mapping: &'a Mapping, catalog: &'a Catalog, source: &'a str) -> Result<Self, String> {
        let tz_name = mapping.timezone.as_deref().unwrap_or("Europe/Paris");
        let tz = jiff::tz::TimeZone::get(tz_name).map_err(|_| format!("unknown time zone `{tz_name}`"))?;
        if mapping.kind == MappingKind::Track
            && mapping.event.is_none()
            && !mapping.columns.values().any(|t| t == "event")
        {
            return Err("a track import needs `event = \"…\"` or an `event` column".to_owned());
        }
        Ok(Self {
            mapping,
            catalog,
            source,
            tz,
        })
    }

    /// An instant with an offset is taken as is; a local date-time is read in the mapping's
    /// time zone, as tills write them.
    fn timestamp(&self, cell: &str) -> Result<Value, String> {
        if let Ok(ts) = cell.parse::<jiff::Timestamp>() {
            return Ok(Value::String(ts.to_string()));
        }
        let civil = match &self.mapping.timestamp_format {
            Some(fmt) => jiff::civil::DateTime::strptime(fmt, cell).ok(),
            None => cell
                .parse::<jiff::civil::DateTime>()
                .ok()
                .or_else(|| jiff::civil::DateTime::strptime("%d/%m/%Y %H:%M", cell).ok())
                .or_else(|| parse_date(cell).map(|d| d.to_datetime(jiff::civil::Time::midnight()))),
        };
        let dt = civil.ok_or_else(|| "is not a date-time".to_owned())?;
        dt.to_zoned(self.tz.clone())
            .map(|z| Value::String(z.timestamp().to_string()))
            .map_err(|_| "is not a valid local time".to_owned())
    }

    /// The event name a row will carry, to find the types of its properties.
    fn event_of(&self, header: &[String], row: &csv::StringRecord) -> Option<String> {
        self.mapping.event.clone().or_else(|| {
            self.mapping
                .columns
                .iter()
                .find(|(_, t)| *t == "event")
                .and_then(|(col, _)| {
                    header
                        .iter()
                        .position(|h| h == col)
                        .and_then(|i| row.get(i))
                        .map(str::to_owned)
                })
        })
    }

    /// Builds the raw message for one row, or the reason the row is rejected.
    pub fn message(&self, header: &[String], row: &csv::StringRecord) -> Result<Value, String> {
        if row.len() != header.len() {
            return Err(format!("has {} fields; the header has {}", row.len(), header.len()));
        }
        if row.iter().any(|cell| cell.contains('\0')) {
            return Err("holds a NUL character, which is not stored".to_owned());
        }
        let event = self.event_of(header, row);
        let event_def = event.as_deref().and_then(|e| self.catalog.events.get(e));
        let mut msg = Map::new();
        let kind = match self.mapping.kind {
            MappingKind::Track => MessageType::Track,
            MappingKind::Identify => MessageType::Identify,
        };
        msg.insert("type".into(), kind.as_str().into());
        if let Some(e) = &self.mapping.event {
            msg.insert("event".into(), e.clone().into());
        }
        let mut traits = Map::new();
        let mut context_traits = Map::new();
        let mut properties = Map::new();
        for (i, column) in header.iter().enumerate() {
            let Some(target) = self.mapping.columns.get(column) else {
                continue;
            };
            let cell = row.get(i).unwrap_or("").trim();
            if cell.is_empty() {
                continue;
            }
            let fail = |why: String| format!("column `{column}` {why}");
            if let Some(name) = target.strip_prefix("properties.") {
                let ty = event_def
                    .and_then(|d| d.properties.get(name).copied())
                    .unwrap_or(ValueType::String);
                properties.insert(name.to_owned(), convert(cell, ty).map_err(fail)?);
            } else if let Some(name) = target.strip_prefix("context.traits.") {
                let ty = self
                    .catalog
                    .traits
                    .get(name)
                    .map_or(ValueType::String, |t| t.value_type);
                context_traits.insert(name.to_owned(), convert(cell, ty).map_err(fail)?);
            } else if let Some(name) = target.strip_prefix("traits.") {
                let ty = self
                    .catalog
                    .traits
                    .get(name)
                    .map_or(ValueType::String, |t| t.value_type);
                traits.insert(name.to_owned(), convert(cell, ty).map_err(fail)?);
            } else {
                match target.as_str() {
                    "timestamp" => {
                        msg.insert("timestamp".into(), self.timestamp(cell).map_err(fail)?);
                    }
                    "userId" | "anonymousId" | "messageId" | "event" => {
                        msg.insert(target.clone(), cell.into());
                    }
                    other => {
                        return Err(format!("mapping target `{other}` for column `{column}` is unknown"));
                    }
                }
            }
        }
        if kind == MessageType::Identify {
            msg.insert("traits".into(), Value::Object(traits));
        } else {
            // A till or CRM row about a purchase still says who bought: those columns are the
            // buyer's traits, carried in the context as Segment does.
            context_traits.extend(traits);
            msg.insert("properties".into(), Value::Object(properties));
        }
        if !context_traits.is_empty() {
            msg.insert("context".into(), serde_json::json!({ "traits": context_traits }));
        }
        if msg.get("userId").is_none() && msg.get("anonymousId").is_none() {
            // A row that names a person only by email is still about someone: the email is the id.
            let email = context_traits_email(&msg);
            match email {
                Some(e) => {
                    msg.insert("userId".into(), Value::String(e));
                }
                None => {
                    return Err("names nobody: it has no user id, anonymous id or email".to_owned());
                }
            }
        }
        let id = match msg.get("messageId").and_then(Value::as_str) {
            Some(id) => format!("import-{}", short_hash(&[self.source, id])),
            None => {
                let content = serde_json::to_string(&msg).unwrap_or_default();
                format!("import-{}", short_hash(&[self.source, &content]))
            }
        };
        msg.insert("messageId".into(), id.into());
        Ok(Value::Object(msg))
    }
}

fn context_traits_email(msg: &Map<String, Value>) -> Option<String> {
    let from_traits = msg.get("traits").and_then(|t| t.get("email"));
    let from_context = msg
        .get("context")
        .and_then(|c| c.get("traits"))
        .and_then(|t| t.get("email"));
    from_traits.or(from_context).and_then(Value::as_str).map(str::to_owned)
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &[&str]) -> csv::StringRecord {
        csv::StringRecord::from(fields.to_vec())
    }

    #[test]
    fn till_rows_become_orders_with_typed_properties() {
        let catalog = Catalog::builtin();
        let mapping = Mapping::from_toml(
            r#"
type = "track"
event = "Order Completed"
timestamp_format = "%d/%m/%Y %H:%M"
[columns]
Ticket = "messageId"
Client = "userId"
Montant = "properties.total"
Boutique = "properties.store"
Email = "context.traits.email"
Date = "timestamp"
"#,
        )
        .unwrap();
        let header: Vec<String> = ["Ticket", "Client", "Montant", "Boutique", "Email", "Date"]
            .map(String::from)
            .to_vec();
        let mapper = RowMapper::new(&mapping, &catalog, "tills").unwrap();
        let msg = mapper
            .message(
                &header,
                &record(&["T-1", "C-9", "12,50", "Paris", "ana@example.org", "31/01/2026 18:30"]),
            )
            .unwrap();
        assert_eq!(msg["properties"]["total"], 12.5);
        assert_eq!(msg["timestamp"], "2026-01-31T17:30:00Z");
        assert_eq!(msg["context"]["traits"]["email"], "ana@example.org");
        let again = mapper
            .message(
                &header,
                &record(&["T-1", "C-9", "12,50", "Paris", "ana@example.org", "31/01/2026 18:30"]),
            )
            .unwrap();
        assert_eq!(msg["messageId"], again["messageId"]);
        let err = mapper
            .message(
                &header,
                &record(&["T-2", "C-9", "douze", "Paris", "", "31/01/2026 18:30"]),
            )
            .unwrap_err();
        assert_eq!(err, "column `Montant` is not a number");
    }

    #[test]
    fn guessed_mapping_for_a_crm_export() {
        let header: Vec<String> = ["user_id", "email", "birthday"].map(String::from).to_vec();
        let m = Mapping::guess(&header);
        assert_eq!(m.kind, MappingKind::Identify);
        assert_eq!(m.columns["email"], "traits.email");
        let catalog = Catalog::builtin();
        let mapper = RowMapper::new(&m, &catalog, "crm").unwrap();
        let msg = mapper
            .message(&header, &record(&["42", "ana@example.org", "14/07/1990"]))
            .unwrap();
        assert_eq!(msg["traits"]["birthday"], "1990-07-14");
        assert!(mapper.message(&header, &record(&["42", "x"])).is_err());
    }
}
