//! Sending email through SMTP (lettre), for identity checks now and campaigns later.
//!
//! The server is given as `smtp://host:port` (`CONFIANCE_SMTP_URL`). The connection is plain:
//! Confiance hands mail to a relay on the same host or private network, which takes care of
//! delivery (and of TLS to the outside world).

use lettre::message::Mailbox;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Message, Tokio1Executor};
use std::fmt;

/// An SMTP relay and the address mail comes from.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Mailer")
    }
}

impl Mailer {
    /// A mailer for `smtp://host:port`, sending from `from` (`Name <address>`).
    pub fn new(url: &str, from: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("smtp://")
            .ok_or_else(|| format!("the SMTP URL must read smtp://host:port, not `{url}`"))?;
        let (host, port) = match rest.trim_end_matches('/').rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse::<u16>().map_err(|_| format!("bad SMTP port in `{url}`"))?,
            ),
            None => (rest.trim_end_matches('/').to_owned(), 25),
        };
        let from: Mailbox = from.parse().map_err(|e| format!("bad sender address `{from}`: {e}"))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .build();
        Ok(Self { transport, from })
    }

    /// Sends a campaign message: plain text (and an HTML alternative when given), with a
    /// stable Message-ID and the one-click unsubscribe headers of RFC 8058. An error says
    /// whether trying again later may work (a 4xx answer: the relay is throttling or busy).
    pub async fn send_campaign(
        &self,
        to: &str,
        subject: &str,
        body: String,
        html: Option<String>,
        message_id: &str,
        unsubscribe: &str,
    ) -> Result<(), SendError> {
        use lettre::message::header::{ContentTransferEncoding, ContentType};
        use lettre::message::{Body, MultiPart, SinglePart};
        let permanent = |message: String| SendError {
            transient: false,
            message,
        };
        // Quoted-printable: lines stay under 76 characters whatever the links' length, and the
        // text stays readable in the raw message.
        let part = |content: String, kind: ContentType| -> Result<SinglePart, SendError> {
            let body = Body::new_with_encoding(content, ContentTransferEncoding::QuotedPrintable)
                .map_err(|_| permanent("the body cannot be encoded".into()))?;
            Ok(SinglePart::builder().header(kind).body(body))
        };
        let to: Mailbox = to.parse().map_err(|e| permanent(format!("bad recipient: {e}")))?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id.to_owned()))
            .header(ListUnsubscribe(format!("<{unsubscribe}>")))
            .header(ListUnsubscribePost);
        let message = match html {
            Some(html) => builder.multipart(
                MultiPart::alternative()
                    .singlepart(part(body, ContentType::TEXT_PLAIN)?)
                    .singlepart(part(html, ContentType::TEXT_HTML)?),
            ),
            None => builder.singlepart(part(body, ContentType::TEXT_PLAIN)?),
        }
        .map_err(|e| permanent(e.to_string()))?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| SendError {
            transient: e.is_transient() || e.is_timeout(),
            message: e.to_string(),
        })
    }

    /// Sends a plain-text message.
    pub async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), String> {
        let to: Mailbox = to.parse().map_err(|e| format!("bad recipient: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .body(body)
            .map_err(|e| e.to_string())?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// An SMS provider reached over HTTP: each message is a `POST` of `{"to": "+33…", "text":
/// "…"}` to its URL, with a bearer token. As with SMTP, Confiance talks plain HTTP to a gateway
/// on the same host or private network, which reaches the provider over TLS.
#[derive(Clone)]
pub struct SmsProvider {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl fmt::Debug for SmsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SmsProvider")
    }
}

impl SmsProvider {
    /// A gateway at `url` (`http://…`), with an optional bearer token.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, String> {
        if !url.starts_with("http://") {
            return Err(format!("the SMS gateway URL must start with http://, not `{url}`"));
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            url: url.to_owned(),
            token,
        })
    }

    /// Sends one text message.
    pub async fn send(&self, to: &str, text: &str) -> Result<(), String> {
        self.send_classified(to, text).await.map_err(|e| e.message)
    }

    /// Sends one text message; an error says whether trying again later may work (the
    /// provider is throttling, `429`, or failing, `5xx`, or unreachable).
    pub async fn send_classified(&self, to: &str, text: &str) -> Result<(), SendError> {
        let mut req = self
            .http
            .post(&self.url)
            .json(&serde_json::json!({"to": to, "text": text}));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| SendError {
            transient: true,
            message: e.without_url().to_string(),
        })?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(SendError {
                transient: status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS,
                message: format!("the provider answered {status}"),
            })
        }
    }
}

/// A message the relay did not take.
#[derive(Clone, Debug)]
pub struct SendError {
    /// Whether trying again later may work.
    pub transient: bool,
    /// What the relay said.
    pub message: String,
}

/// `List-Unsubscribe: <https://…>` (RFC 2369).
#[derive(Clone)]
struct ListUnsubscribe(String);

impl lettre::message::header::Header for ListUnsubscribe {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
#[derive(Clone)]
struct ListUnsubscribePost;

impl lettre::message::header::Header for ListUnsubscribePost {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_owned())
    }
}
