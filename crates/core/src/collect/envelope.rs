//! Request bodies of the tracking API: a single message or a batch, with their limits.
//!
//! # Design
//!
//! A batch is parsed in two steps. First the envelope, with each message kept as raw JSON
//! text, so the 32 KB limit is measured on what the client sent and a message that does not
//! even parse is rejected alone. Then each message on its own, read from its text by
//! [`parse_message`] and checked by [`super::normalize_incoming`]. Only problems with the envelope itself (not JSON, too many
//! messages) fail the whole request.

use super::{Envelope, Incoming, MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, MessageType};
use crate::error::{Error, ErrorCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A parsed batch body.
#[derive(Debug)]
pub struct Batch<'a> {
    /// `writeKey` from the body, if any.
    pub write_key: Option<String>,
    /// Batch-level `sentAt`.
    pub sent_at: Option<String>,
    /// Batch-level `context`.
    pub context: Option<Map<String, Value>>,
    /// Batch-level `integrations`.
    pub integrations: Option<Map<String, Value>>,
    /// Each message as the raw JSON text the client sent.
    pub messages: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawBatch<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
    context: Option<Value>,
    integrations: Option<Value>,
}

fn json_error(e: &serde_json::Error) -> Error {
    Error::new(
        ErrorCode::InvalidJson,
        format!("the body is not valid JSON (line {}, column {})", e.line(), e.column()),
    )
}

fn optional_string(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn optional_object(v: Option<Value>, field: &str) -> Result<Option<Map<String, Value>>, Error> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(Error::new(
            ErrorCode::InvalidField,
            format!("batch-level `{field}` must be an object"),
        )),
    }
}

impl<'a> Batch<'a> {
    /// Parses a `/v1/batch` body.
    pub fn parse(body: &'a [u8]) -> Result<Self, Error> {
        let raw: RawBatch<'a> = serde_json::from_slice(body).map_err(|e| {
            if e.is_data() {
                Error::new(ErrorCode::InvalidJson, "a batch body is an object with a `batch` array")
            } else {
                json_error(&e)
            }
        })?;
        let messages = raw
            .batch
            .ok_or_else(|| Error::new(ErrorCode::MissingField, "a batch body requires a `batch` array"))?;
        if messages.len() > MAX_BATCH_MESSAGES {
            return Err(Error::new(
                ErrorCode::BatchTooLarge,
                format!(
                    "the batch holds {} messages; the limit is {MAX_BATCH_MESSAGES}",
                    messages.len()
                ),
            ));
        }
        Ok(Batch {
            write_key: optional_string(raw.write_key),
            sent_at: optional_string(raw.sent_at),
            context: optional_object(raw.context, "context")?,
            integrations: optional_object(raw.integrations, "integrations")?,
            messages,
        })
    }

    /// The envelope each message of this batch is normalised in.
    pub fn envelope(&self) -> Envelope<'_> {
        Envelope {
            kind: None,
            context: self.context.as_ref(),
            integrations: self.integrations.as_ref(),
            sent_at: self.sent_at.as_deref(),
        }
    }
}

/// Parses one raw message of a batch, enforcing the per-message limit.
pub fn parse_message(raw: &RawValue) -> Result<Incoming, Error> {
    let text = raw.get();
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(too_large(text.len()));
    }
    refuse_nul(text.as_bytes())?;
    Incoming::from_json(text)
}

/// PostgreSQL cannot store the NUL character in text or JSON, and no real field needs it: a
/// message holding one is refused on every store alike. JSON can only write it as the escape
/// `\u0000` (hex digits have no case; `\U` is not an escape).
fn refuse_nul(text: &[u8]) -> Result<(), Error> {
    if memchr::memmem::find(text, b"\\u0000").is_some() {
        return Err(Error::new(
            ErrorCode::InvalidField,
            "a string holds the NUL character (\\u0000), which is not stored",
        ));
    }
    Ok(())
}

fn too_large(len: usize) -> Error {
    Error::new(
        ErrorCode::MessageTooLarge,
        format!("the message is {len} bytes; the limit is {MAX_MESSAGE_BYTES} bytes (32 KB)"),
    )
}

/// A single-message body (`/v1/track`, …): the message and the `writeKey` it carried.
#[derive(Debug)]
pub struct Single {
    /// `writeKey` from the body, if any.
    pub write_key: Option<String>,
    /// The message, without `writeKey`.
    pub message: Value,
}

impl Single {
    /// Parses the body of a single-message endpoint.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(too_large(body.len()));
        }
        refuse_nul(body)?;
        let mut map: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
            if e.is_data() {
                Error::new(ErrorCode::InvalidJson, "the body must be a JSON object")
            } else {
                json_error(&e)
            }
        })?;
        let write_key = optional_string(map.remove("writeKey"));
        Ok(Single {
            write_key,
            message: Value::Object(map),
        })
    }

    /// The envelope for a single message posted to the endpoint of `kind`.
    pub fn envelope(kind: MessageType) -> Envelope<'static> {
        Envelope {
            kind: Some(kind),
            ..Envelope::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_errors() {
        assert_eq!(Batch::parse(b"{").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(Batch::parse(b"[]").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(Batch::parse(b"{}").unwrap_err().code, ErrorCode::MissingField);
        let big = format!("{{\"batch\": [{}]}}", vec!["{}"; 2501].join(","));
        assert_eq!(Batch::parse(big.as_bytes()).unwrap_err().code, ErrorCode::BatchTooLarge);
    }

    #[test]
    fn a_bad_message_does_not_fail_its_batch() {
        let body = br#"{"writeKey": "k", "batch": [{"type": "page"}, {"x": 1}, 17]}"#;
        let b = Batch::parse(body).unwrap();
        assert_eq!(b.write_key.as_deref(), Some("k"));
        assert_eq!(b.messages.len(), 3);
        assert!(parse_message(b.messages[0]).is_ok());
        assert_eq!(
            parse_message(b.messages[2]).err().map(|e| e.code),
            Some(ErrorCode::InvalidJson)
        );
    }

    #[test]
    fn nul_characters_are_refused() {
        let b = Batch::parse(br#"{"batch": [{"userId": "a\u0000b"}, {"userId": "ok"}]}"#).unwrap();
        assert_eq!(
            parse_message(b.messages[0]).err().map(|e| e.code),
            Some(ErrorCode::InvalidField)
        );
        assert!(parse_message(b.messages[1]).is_ok());
        assert!(Single::parse(br#"{"userId": "\u0000"}"#).is_err());
    }

    #[test]
    fn oversize_message_is_named() {
        let big = format!("{{\"batch\": [{{\"p\": \"{}\"}}]}}", "x".repeat(MAX_MESSAGE_BYTES));
        let b = Batch::parse(big.as_bytes()).unwrap();
        assert_eq!(
            parse_message(b.messages[0]).err().map(|e| e.code),
            Some(ErrorCode::MessageTooLarge)
        );
    }
}
