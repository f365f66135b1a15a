//! Collect: turns what sources send into messages fit for the event log.
//!
//! # Design
//!
//! Everything enters through [`normalize_incoming`] — from the text of a batch message, or
//! through [`normalize`] from a JSON value —, whether it came from the Segment-compatible HTTP
//! API, a CSV import or the demo generator, so the rules are the same for all: the message is
//! parsed into a typed [`Message`] (or rejected with a precise [`Error`]), the client clock is
//! corrected with `sentAt`, and whatever the catalog does not declare is dropped and reported
//! (data minimisation). One message is normalised at a time, so an invalid message never takes
//! the valid ones of its batch down with it.

pub mod envelope;
pub mod import;

use crate::catalog::{Catalog, ValueType};
use crate::error::{Error, ErrorCode};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// The largest message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// The largest request body accepted, in bytes (after decompression).
pub const MAX_REQUEST_BYTES: usize = 500 * 1024;
/// The most messages one batch may hold.
pub const MAX_BATCH_MESSAGES: usize = 2_500;
/// The longest `messageId` accepted.
pub const MAX_MESSAGE_ID_CHARS: usize = 100;

/// The Segment message types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    /// Who the user is, with traits.
    Identify,
    /// Something the user did.
    Track,
    /// A web page view.
    Page,
    /// An app screen view.
    Screen,
    /// Membership of a group (a company, a household).
    Group,
    /// Two ids are the same user.
    Alias,
}

impl MessageType {
    /// Every type.
    pub const ALL: [MessageType; 6] = [
        Self::Identify,
        Self::Track,
        Self::Page,
        Self::Screen,
        Self::Group,
        Self::Alias,
    ];

    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identify => "identify",
            Self::Track => "track",
            Self::Page => "page",
            Self::Screen => "screen",
            Self::Group => "group",
            Self::Alias => "alias",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A normalised message, ready for the event log.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Client-chosen id (or one given by the server), unique per source.
    pub message_id: String,
    /// Message type.
    pub kind: MessageType,
    /// The user id, when known.
    pub user_id: Option<String>,
    /// The anonymous (device or cookie) id, when known.
    pub anonymous_id: Option<String>,
    /// The event name for `track`, the page or screen name, the group id for `group`.
    pub event: Option<String>,
    /// When it happened, corrected for client clock skew.
    pub timestamp: Timestamp,
    /// When the server received it.
    pub received_at: Timestamp,
    /// The whole normalised message, Segment-shaped, as stored.
    pub body: Value,
    /// The purposes it was collected for, with a legal basis at collection time (filled by
    /// consent enforcement; empty for messages that only link identifiers).
    pub purposes: Vec<String>,
}

/// Why part of a message was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// A trait the catalog does not declare.
    UndeclaredTrait,
    /// A property the catalog does not declare for this event.
    UndeclaredProperty,
    /// A declared field whose value has another type than declared.
    WrongType,
    /// A trait none of whose purposes has a legal basis for this subject (no consent).
    NoLegalBasis,
    /// A consent signal that could not be read (a malformed TC string).
    InvalidConsentSignal,
}

impl DropReason {
    /// The snake_case name, for metrics and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UndeclaredTrait => "undeclared_trait",
            Self::UndeclaredProperty => "undeclared_property",
            Self::WrongType => "wrong_type",
            Self::NoLegalBasis => "no_legal_basis",
            Self::InvalidConsentSignal => "invalid_consent_signal",
        }
    }
}

/// A field that was dropped, and why. Names the field, never its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// Path of the field, e.g. `properties.coupon_code`.
    pub field: String,
    /// Why.
    pub reason: DropReason,
}

/// A message accepted for storage, with what was dropped from it.
#[derive(Clone, Debug)]
pub struct Normalized {
    /// The message to store.
    pub message: Message,
    /// Fields left out by data minimisation.
    pub dropped: Vec<Dropped>,
}

/// What the envelope around a message contributes: batch-level fields and the request's clock.
#[derive(Clone, Debug, Default)]
pub struct Envelope<'a> {
    /// The type implied by the endpoint (`/v1/track`), which wins over the body's `type`.
    pub kind: Option<MessageType>,
    /// Batch-level `context`, merged under the message's own.
    pub context: Option<&'a Map<String, Value>>,
    /// Batch-level `integrations`, merged under the message's own.
    pub integrations: Option<&'a Map<String, Value>>,
    /// Batch-level `sentAt`.
    pub sent_at: Option<&'a str>,
}

/// A message as a client sent it, before [`normalize_incoming`] checks it: only the fields
/// Confiance reads, as loosely as the SDKs send them (every optional field may be absent or an
/// explicit `null`). Fields it does not know are skipped without being kept.
#[derive(Deserialize, Default)]
pub struct Incoming {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "messageId")]
    message_id: Option<Value>,
    #[serde(rename = "userId")]
    user_id: Option<Value>,
    #[serde(rename = "anonymousId")]
    anonymous_id: Option<Value>,
    event: Option<Value>,
    name: Option<Value>,
    category: Option<Value>,
    properties: Option<Value>,
    traits: Option<Value>,
    context: Option<Value>,
    integrations: Option<Value>,
    timestamp: Option<Value>,
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
    #[serde(rename = "groupId")]
    group_id: Option<Value>,
    #[serde(rename = "previousId")]
    previous_id: Option<Value>,
}

fn missing(field: &str, kind: MessageType) -> Error {
    Error::new(
        ErrorCode::MissingField,
        format!("a `{kind}` message requires `{field}`"),
    )
}

/// An id field: a non-empty string, or a number (some SDKs send numeric user ids).
fn id_field(value: Option<Value>, field: &str) -> Result<Option<String>, Error> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() > 1024 => Err(Error::new(
            ErrorCode::InvalidField,
            format!("`{field}` is longer than 1024 bytes"),
        )),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(Error::new(
            ErrorCode::InvalidField,
            format!("`{field}` must be a string"),
        )),
    }
}

fn object_field(value: Option<Value>, field: &str) -> Result<Option<Map<String, Value>>, Error> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(Error::new(
            ErrorCode::InvalidField,
            format!("`{field}` must be an object"),
        )),
    }
}

fn time_field(value: Option<&Value>, field: &str) -> Result<Option<Timestamp>, Error> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_time(s).map(Some).ok_or_else(|| {
            Error::new(
                ErrorCode::InvalidTimestamp,
                format!("`{field}` is not an ISO-8601 date-time"),
            )
        }),
        Some(_) => Err(Error::new(
            ErrorCode::InvalidTimestamp,
            format!("`{field}` must be an ISO-8601 string"),
        )),
    }
}

/// Parses an ISO-8601 instant; a date-time without offset is read as UTC, as Segment does.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse::<Timestamp>().ok().or_else(|| {
        s.parse::<jiff::civil::DateTime>()
            .ok()
            .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp())
    })
}

/// The value under the object keys of `path` inside `value`. What [`Value::pointer`] finds for
/// `/a/b`, without the two strings it allocates for each key to unescape it: every event is
/// looked into this way several times.
pub fn at_path<'v>(value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// [`at_path`], to change what it finds.
pub fn at_path_mut<'v>(value: &'v mut Value, path: &[&str]) -> Option<&'v mut Value> {
    path.iter().try_fold(value, |v, key| v.get_mut(key))
}

/// Keeps the declared entries of `map`, reporting the others under `prefix`.
fn minimise(
    map: Map<String, Value>,
    declared: impl Fn(&str) -> Option<ValueType>,
    prefix: &str,
    undeclared: DropReason,
    dropped: &mut Vec<Dropped>,
) -> Map<String, Value> {
    let mut kept = Map::with_capacity(map.len());
    for (key, value) in map {
        match declared(&key) {
            Some(ty) if ty.accepts(&value) => {
                kept.insert(key, value);
            }
            Some(_) => dropped.push(Dropped {
                field: format!("{prefix}.{key}"),
                reason: DropReason::WrongType,
            }),
            None => dropped.push(Dropped {
                field: format!("{prefix}.{key}"),
                reason: undeclared,
            }),
        }
    }
    kept
}

fn merge_under(own: Option<Map<String, Value>>, batch: Option<&Map<String, Value>>) -> Option<Map<String, Value>> {
    match (own, batch) {
        (own, None) => own,
        (None, Some(b)) => Some(b.clone()),
        (Some(mut own), Some(b)) => {
            for (k, v) in b {
                own.entry(k.clone()).or_insert_with(|| v.clone());
            }
            Some(own)
        }
    }
}

/// A message id the server gives a message that came without one.
fn server_message_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("srv-{}", hex::encode(bytes))
}

fn not_an_object() -> Error {
    Error::new(ErrorCode::InvalidJson, "a message must be a JSON object")
}

fn malformed(e: &serde_json::Error) -> Error {
    Error::new(ErrorCode::InvalidJson, format!("message is malformed: {e}"))
}

impl Incoming {
    /// Reads a message from a JSON value, such as an import or the demo builds.
    pub fn from_value(raw: Value) -> Result<Self, Error> {
        if !raw.is_object() {
            return Err(not_an_object());
        }
        serde_json::from_value(raw).map_err(|e| malformed(&e))
    }

    /// Reads a message straight from the JSON text a client sent, without building a tree of
    /// the whole message first: the fields Confiance uses become values, the others are skipped.
    /// A key given twice is refused (the tree would have kept the last one silently).
    pub fn from_json(text: &str) -> Result<Self, Error> {
        // A derived reader would also take an array, field by field in order.
        if !text.trim_start().starts_with('{') {
            return Err(not_an_object());
        }
        serde_json::from_str(text).map_err(|e| {
            if !e.is_data() {
                Error::new(
                    ErrorCode::InvalidJson,
                    format!(
                        "the message is not valid JSON (line {}, column {})",
                        e.line(),
                        e.column()
                    ),
                )
            } else {
                malformed(&e)
            }
        })
    }
}

/// Normalises one incoming message against the catalog.
///
/// `raw` is the message's JSON object. `received_at` is the server's clock at reception.
pub fn normalize(
    raw: Value,
    envelope: &Envelope<'_>,
    catalog: &Catalog,
    received_at: Timestamp,
) -> Result<Normalized, Error> {
    normalize_incoming(Incoming::from_value(raw)?, envelope, catalog, received_at)
}

/// Normalises one message read with [`Incoming::from_json`] or [`Incoming::from_value`].
pub fn normalize_incoming(
    incoming: Incoming,
    envelope: &Envelope<'_>,
    catalog: &Catalog,
    received_at: Timestamp,
) -> Result<Normalized, Error> {
    let kind = match (envelope.kind, incoming.kind.as_deref()) {
        (Some(k), _) => k,
        (None, Some(t)) => MessageType::parse(t).ok_or_else(|| {
            Error::new(
                ErrorCode::UnknownMessageType,
                "`type` must be identify, track, page, screen, group or alias",
            )
        })?,
        (None, None) => {
            return Err(Error::new(ErrorCode::MissingField, "a message requires `type`"));
        }
    };

    let message_id = match id_field(incoming.message_id, "messageId")? {
        Some(id) if id.chars().count() > MAX_MESSAGE_ID_CHARS => {
            return Err(Error::new(
                ErrorCode::InvalidField,
                format!("`messageId` is longer than {MAX_MESSAGE_ID_CHARS} characters"),
            ));
        }
        Some(id) => id,
        None => server_message_id(),
    };
    let user_id = id_field(incoming.user_id, "userId")?;
    let anonymous_id = id_field(incoming.anonymous_id, "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(Error::new(
            ErrorCode::MissingField,
            "a message requires `userId` or `anonymousId`",
        ));
    }

    let sent_at = match time_field(incoming.sent_at.as_ref(), "sentAt")? {
        Some(t) => Some(t),
        None => envelope
            .sent_at
            .map(|s| time_field(Some(&Value::String(s.to_owned())), "sentAt"))
            .transpose()?
            .flatten(),
    };
    let original = time_field(incoming.timestamp.as_ref(), "timestamp")?;
    let timestamp = match (original, sent_at) {
        // Segment's clock-skew correction: the delay the client measured between the event and
        // sending it is replayed against the server's clock.
        (Some(ts), Some(sent)) => received_at.checked_sub(sent.duration_since(ts)).unwrap_or(received_at),
        (Some(ts), None) => ts,
        (None, _) => received_at,
    };

    let mut dropped = Vec::new();
    let mut body = Map::new();
    body.insert("type".into(), kind.as_str().into());
    body.insert("messageId".into(), message_id.clone().into());
    if let Some(u) = &user_id {
        body.insert("userId".into(), u.clone().into());
    }
    if let Some(a) = &anonymous_id {
        body.insert("anonymousId".into(), a.clone().into());
    }

    let trait_type = |k: &str| catalog.traits.get(k).map(|t| t.value_type);
    let page_type = |k: &str| catalog.page_properties.get(k).copied();
    let event = match kind {
        MessageType::Track => {
            let name = match incoming.event {
                Some(Value::String(s)) if !s.trim().is_empty() => s,
                Some(Value::String(_)) | Some(Value::Null) | None => {
                    return Err(missing("event", kind));
                }
                Some(_) => {
                    return Err(Error::new(ErrorCode::InvalidField, "`event` must be a string"));
                }
            };
            let def = catalog.events.get(&name).ok_or_else(|| {
                Error::new(
                    ErrorCode::UndeclaredEvent,
                    "the event is not declared in the data catalog, so it is not collected",
                )
            })?;
            let props = object_field(incoming.properties, "properties")?.unwrap_or_default();
            let props = minimise(
                props,
                |k| def.properties.get(k).copied(),
                "properties",
                DropReason::UndeclaredProperty,
                &mut dropped,
            );
            body.insert("event".into(), name.clone().into());
            body.insert("properties".into(), Value::Object(props));
            Some(name)
        }
        MessageType::Identify | MessageType::Group => {
            let traits = object_field(incoming.traits, "traits")?.unwrap_or_default();
            let traits = minimise(traits, trait_type, "traits", DropReason::UndeclaredTrait, &mut dropped);
            body.insert("traits".into(), Value::Object(traits));
            if kind == MessageType::Group {
                let group = id_field(incoming.group_id, "groupId")?.ok_or_else(|| missing("groupId", kind))?;
                body.insert("groupId".into(), group.clone().into());
                Some(group)
            } else {
                None
            }
        }
        MessageType::Page | MessageType::Screen => {
            let name = match incoming.name {
                Some(Value::String(s)) if !s.is_empty() => Some(s),
                None | Some(Value::Null) | Some(Value::String(_)) => None,
                Some(_) => {
                    return Err(Error::new(ErrorCode::InvalidField, "`name` must be a string"));
                }
            };
            if let Some(Value::String(c)) = incoming.category {
                body.insert("category".into(), c.into());
            }
            if let Some(n) = &name {
                body.insert("name".into(), n.clone().into());
            }
            let props = object_field(incoming.properties, "properties")?.unwrap_or_default();
            let props = minimise(
                props,
                page_type,
                "properties",
                DropReason::UndeclaredProperty,
                &mut dropped,
            );
            body.insert("properties".into(), Value::Object(props));
            name
        }
        MessageType::Alias => {
            let previous = id_field(incoming.previous_id, "previousId")?.ok_or_else(|| missing("previousId", kind))?;
            if user_id.is_none() {
                return Err(missing("userId", kind));
            }
            body.insert("previousId".into(), previous.into());
            None
        }
    };

    let mut context = merge_under(object_field(incoming.context, "context")?, envelope.context);
    if let Some(ctx) = context.as_mut()
        && let Some(traits) = ctx.remove("traits")
    {
        let traits = match traits {
            Value::Object(m) => m,
            _ => {
                return Err(Error::new(
                    ErrorCode::InvalidField,
                    "`context.traits` must be an object",
                ));
            }
        };
        let traits = minimise(
            traits,
            trait_type,
            "context.traits",
            DropReason::UndeclaredTrait,
            &mut dropped,
        );
        ctx.insert("traits".into(), Value::Object(traits));
    }
    if let Some(ctx) = context {
        body.insert("context".into(), Value::Object(ctx));
    }
    if let Some(integrations) = merge_under(
        object_field(incoming.integrations, "integrations")?,
        envelope.integrations,
    ) {
        body.insert("integrations".into(), Value::Object(integrations));
    }
    body.insert("timestamp".into(), timestamp.to_string().into());
    if let Some(orig) = original {
        body.insert("originalTimestamp".into(), orig.to_string().into());
    }
    if let Some(sent) = sent_at {
        body.insert("sentAt".into(), sent.to_string().into());
    }
    body.insert("receivedAt".into(), received_at.to_string().into());

    Ok(Normalized {
        message: Message {
            message_id,
            kind,
            user_id,
            anonymous_id,
            event,
            timestamp,
            received_at,
            body: Value::Object(body),
            purposes: Vec::new(),
        },
        dropped,
    })
}

/// The person's traits a stored message carries — an identify's `traits` and any message's
/// `context.traits` (a group's `traits` describe the group) — sorted, each once. The store keeps
/// them beside the event, so that whose data a breach touched, and which sources supply a trait,
/// are answered without reading bodies.
pub fn carried_traits(kind: MessageType, body: &Value) -> Vec<&str> {
    let own = (kind == MessageType::Identify).then(|| body.get("traits")).flatten();
    let context = body.get("context").and_then(|c| c.get("traits"));
    let mut names: Vec<&str> = [own, context]
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|m| m.iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Counts of what was dropped, by reason, for a per-source counter.
pub fn count_dropped(dropped: &[Dropped]) -> BTreeMap<DropReason, u64> {
    let mut counts = BTreeMap::new();
    for d in dropped {
        *counts.entry(d.reason).or_insert(0) += 1;
    }
    counts
}

impl PartialOrd for DropReason {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DropReason {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn at_finds_what_a_pointer_finds() {
        let mut body = json!({"context": {"consent": {"categoryPreferences": {"ads": false}}, "ip": "x"}, "n": 1});
        for (path, pointer) in [
            (
                &["context", "consent", "categoryPreferences"][..],
                "/context/consent/categoryPreferences",
            ),
            (&["context", "ip"], "/context/ip"),
            (&["context", "missing"], "/context/missing"),
            (&["n", "below"], "/n/below"),
            (&[], ""),
        ] {
            assert_eq!(at_path(&body, path), body.pointer(pointer), "{pointer}");
        }
        if let Some(ip) = at_path_mut(&mut body, &["context", "ip"]) {
            *ip = json!("y");
        }
        assert_eq!(body["context"]["ip"], "y");
    }

    #[test]
    fn carried_traits_are_the_persons_own_and_those_in_context() {
        let body = json!({"traits": {"phone": "+33600000000", "email": "a@example.org"},
                          "context": {"traits": {"email": "a@example.org", "city": null, "first_name": "Ana"}}});
        assert_eq!(
            carried_traits(MessageType::Identify, &body),
            ["email", "first_name", "phone"]
        );
        // A group's traits describe the group, not the person.
        assert_eq!(carried_traits(MessageType::Group, &body), ["email", "first_name"]);
        assert!(carried_traits(MessageType::Track, &json!({"properties": {"sku": "x"}})).is_empty());
    }

    fn now() -> Timestamp {
        "2026-11-29T10:00:00Z".parse().unwrap()
    }

    fn norm(v: Value) -> Result<Normalized, Error> {
        normalize(v, &Envelope::default(), &Catalog::builtin(), now())
    }

    #[test]
    fn track_keeps_declared_properties_and_reports_the_rest() {
        let n = norm(json!({
            "type": "track", "messageId": "m1", "userId": "u1", "event": "Order Completed",
            "properties": {"order_id": "o1", "total": 42.5, "shoe_size": 43, "currency": 7},
            "context": {"traits": {"email": "ana@example.org", "religion": "x"}},
        }))
        .unwrap();
        let props = &n.message.body["properties"];
        assert_eq!(props, &json!({"order_id": "o1", "total": 42.5}));
        assert_eq!(n.message.body["context"]["traits"], json!({"email": "ana@example.org"}));
        let mut fields: Vec<_> = n.dropped.iter().map(|d| (d.field.as_str(), d.reason)).collect();
        fields.sort();
        assert_eq!(
            fields,
            vec![
                ("context.traits.religion", DropReason::UndeclaredTrait),
                ("properties.currency", DropReason::WrongType),
                ("properties.shoe_size", DropReason::UndeclaredProperty),
            ]
        );
    }

    #[test]
    fn a_message_read_from_its_text_is_the_message_read_from_a_value() {
        let raw = json!({
            "type": "identify", "messageId": null, "userId": 4217, "anonymousId": "a-1",
            "traits": {"email": "ana@example.org", "shoe_size": 43},
            "context": {"ip": "192.0.2.1", "traits": {"city": "Paris"}, "library": {"name": "x"}},
            "integrations": {"All": true}, "timestamp": "2026-11-29T09:00:00Z",
            "sentAt": null, "_metadata": {"bundled": []}, "version": 2,
        });
        let text = raw.to_string();
        let from_text = normalize_incoming(
            Incoming::from_json(&text).unwrap(),
            &Envelope::default(),
            &Catalog::builtin(),
            now(),
        )
        .unwrap();
        let from_value = norm(raw).unwrap();
        assert_eq!(from_text.message.user_id.as_deref(), Some("4217"));
        assert_eq!(from_text.dropped, from_value.dropped);
        let mut body = from_text.message.body;
        // The server gives each a message id of its own.
        body["messageId"] = from_value.message.body["messageId"].clone();
        assert_eq!(body, from_value.message.body);

        let array = r#"["track", null, "u1", null, "Order Completed"]"#;
        for text in ["17", "[]", "\"page\"", array] {
            let err = Incoming::from_json(text).err().unwrap();
            assert_eq!(
                (err.code, err.message.as_str()),
                (ErrorCode::InvalidJson, "a message must be a JSON object")
            );
        }
        let err = Incoming::from_json(r#"{"type": 5}"#).err().unwrap();
        assert_eq!(err.code, ErrorCode::InvalidJson);
        assert!(
            err.message.starts_with("message is malformed: invalid type"),
            "{}",
            err.message
        );
        let err = Incoming::from_json(r#"{"type": "track", "type": "page"}"#)
            .err()
            .unwrap();
        assert!(err.message.contains("duplicate field `type`"), "{}", err.message);
    }

    #[test]
    fn clock_skew_is_corrected_with_sent_at() {
        let n = norm(json!({
            "type": "track", "userId": "u1", "event": "Products Searched",
            "timestamp": "2020-01-01T00:00:00.000Z", "sentAt": "2020-01-01T00:00:05.000Z",
        }))
        .unwrap();
        assert_eq!(n.message.timestamp, "2026-11-29T09:59:55Z".parse().unwrap());
        assert_eq!(n.message.body["originalTimestamp"], "2020-01-01T00:00:00Z");
    }

    #[test]
    fn explicit_nulls_are_absent_fields() {
        let n = norm(json!({
            "type": "identify", "userId": null, "anonymousId": "a1", "traits": null,
            "context": null, "integrations": null, "timestamp": null, "messageId": null,
        }))
        .unwrap();
        assert_eq!(n.message.user_id, None);
        assert!(n.message.message_id.starts_with("srv-"));
    }

    #[test]
    fn invalid_messages_name_their_problem() {
        let cases = [
            (json!({"type": "track", "userId": "u"}), ErrorCode::MissingField),
            (
                json!({"type": "track", "event": "Order Completed"}),
                ErrorCode::MissingField,
            ),
            (
                json!({"type": "track", "userId": "u", "event": "Hacked"}),
                ErrorCode::UndeclaredEvent,
            ),
            (json!({"type": "jump", "userId": "u"}), ErrorCode::UnknownMessageType),
            (json!({"type": "alias", "userId": "u"}), ErrorCode::MissingField),
            (json!({"type": "group", "userId": "u"}), ErrorCode::MissingField),
            (
                json!({"type": "page", "userId": "u", "timestamp": "yesterday"}),
                ErrorCode::InvalidTimestamp,
            ),
            (
                json!({"type": "page", "userId": "u", "messageId": "x".repeat(101)}),
                ErrorCode::InvalidField,
            ),
            (json!({"type": "page", "userId": ["u"]}), ErrorCode::InvalidField),
            (json!(["not", "an", "object"]), ErrorCode::InvalidJson),
        ];
        for (raw, code) in cases {
            let err = norm(raw.clone()).unwrap_err();
            assert_eq!(err.code, code, "{raw}: {err}");
        }
    }

    #[test]
    fn batch_context_merges_under_the_message_context() {
        let batch_ctx = json!({"library": {"name": "batch"}, "locale": "fr-FR"});
        let env = Envelope {
            context: batch_ctx.as_object(),
            ..Envelope::default()
        };
        let n = normalize(
            json!({"type": "page", "anonymousId": "a", "context": {"library": {"name": "own"}}}),
            &env,
            &Catalog::builtin(),
            now(),
        )
        .unwrap();
        assert_eq!(
            n.message.body["context"],
            json!({"library": {"name": "own"}, "locale": "fr-FR"})
        );
    }
}
