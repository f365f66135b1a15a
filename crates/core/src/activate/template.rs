//! Personalised messages: a campaign's subject and body, in French and English, written as
//! minijinja templates over the traits the campaign's purpose may use.
//!
//! # Design
//!
//! A template is checked when the campaign is saved, not when the first message goes: [`check`]
//! parses every language variant and reads, statically, every variable it names. A trait the
//! purpose may not use (`traits.gender` in a newsletter) is refused then, with its name and the
//! traits that are allowed, so nobody learns about it from a half-sent campaign. For the check to
//! see every trait, traits are read by name only (`traits.first_name`): a template that handles
//! `traits` as a whole (`traits["gender"]`, `{% set t = traits %}`) is refused too. Anything
//! outside the documented context is refused as a typo.
//!
//! The context a template sees, built by the caller for one person:
//!
//! - `traits`: the person's traits the purpose may use, and only those;
//! - `voucher`, when the campaign gives one: `code`, `value` (`10 €` / `€10`), `currency` and
//!   `expires_at` (`1er mars 2027` / `1 March 2027`);
//! - `suggestions`: products suggested from the person's purchases (see [`super::suggest`]);
//! - `links`: the `preferences` and `unsubscribe` URLs;
//! - `campaign`: the campaign's name.
//!
//! [`render`] is both the send and the preview for one profile. It is lenient with *values*: a
//! trait the person has not given (or that is null) renders as nothing, so a birthday email to
//! someone without a first name still goes ("Bonjour ,"; authors write `{% if
//! traits.first_name %}` where it matters). It can afford to be, because the save-time check
//! already caught misspelt *names*, and `traits` only ever holds allowed traits, so leniency
//! never reveals anything.
//!
//! Templates are written by shop staff, not developers, and run once per person, so each render
//! is bounded: 16 KiB of source per variant, 64 KiB of output, and minijinja's *fuel* (a budget
//! of instructions) so a runaway loop fails with an error instead of stalling the sender.
//! Includes, imports and macros are not compiled in: a message is one self-contained template.
//!
//! Bodies are `text/plain` (email, SMS, postal cards), so HTML auto-escaping is off: a name like
//! `O'Brien & fils` must arrive as typed. Whitespace follows Jinja's defaults, so the minijinja
//! documentation applies as written (`{%- … -%}` trims): turning `trim_blocks` on would spare a
//! blank line after a tag alone on its line, but would also join the line after every inline
//! `{% endif %}` that ends one, a worse surprise in a text message.
//!
//! Amounts and dates are shown the way each language writes them, so the voucher's fields are
//! formatted for the message's language before the template sees them.

use jiff::civil::Date;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;

/// The most source one language variant of a subject or body may hold, in bytes.
pub const MAX_SOURCE: usize = 16 * 1024;

/// The most text one rendered subject or body may hold, in bytes.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// The instructions one render may execute: far more than a real message needs (a birthday
/// email with five suggestions takes about a hundred), far less than a nested loop gone wrong.
pub const FUEL: u64 = 50_000;

/// The top-level names a template may read, besides minijinja's global functions (`range`,
/// `dict`, `namespace`).
pub const CONTEXT: [&str; 5] = ["traits", "voucher", "suggestions", "links", "campaign"];

/// A message's language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lang {
    /// French, which every template has.
    Fr,
    /// English, when the template has an English variant.
    En,
}

impl Lang {
    /// The language asked for by a profile's `language` trait or a preview: English for `en`,
    /// `en-GB`, `EN_us`…, French for anything else, because French is the variant every
    /// template has.
    pub fn parse(tag: &str) -> Lang {
        let primary = tag.split(['-', '_']).next().unwrap_or_default();
        if primary.eq_ignore_ascii_case("en") {
            Lang::En
        } else {
            Lang::Fr
        }
    }

    /// The language code.
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text in French, and optionally in English.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Localized {
    /// The French text.
    #[serde(default)]
    pub fr: String,
    /// The English text; people who read English get the French one when it is absent or blank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub en: Option<String>,
}

impl Localized {
    /// The variant for `lang` and the language it is actually in.
    pub fn get(&self, lang: Lang) -> (&str, Lang) {
        match (lang, &self.en) {
            (Lang::En, Some(en)) if !en.trim().is_empty() => (en, Lang::En),
            _ => (&self.fr, Lang::Fr),
        }
    }

    /// Every variant that is present, French first.
    fn variants(&self) -> impl Iterator<Item = (&str, Lang)> {
        let en = self.en.as_deref().filter(|en| !en.trim().is_empty());
        std::iter::once((self.fr.as_str(), Lang::Fr)).chain(en.map(|en| (en, Lang::En)))
    }
}

/// A campaign step's message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageTemplate {
    /// The email subject; empty for SMS and postal cards.
    #[serde(default)]
    pub subject: Localized,
    /// The text of the message.
    pub body: Localized,
}

/// Which part of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// The subject.
    Subject,
    /// The body.
    Body,
}

/// One language variant of one part, where a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Variant {
    /// Subject or body.
    pub part: Part,
    /// Its language.
    pub lang: Lang,
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = match self.part {
            Part::Subject => "subject",
            Part::Body => "body",
        };
        write!(f, "{part} ({})", self.lang)
    }
}

/// Why a template cannot be saved or rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The French body is blank: there would be nothing to send.
    #[error("body (fr): a message needs a French body")]
    EmptyBody,
    /// A variant's source is over [`MAX_SOURCE`].
    #[error("{at}: {size} bytes, a template holds at most {MAX_SOURCE}")]
    TooLarge {
        /// Where.
        at: Variant,
        /// Its size in bytes.
        size: usize,
    },
    /// A variant does not parse.
    #[error("{at}, line {line}: {message}")]
    Syntax {
        /// Where.
        at: Variant,
        /// The line, from 1.
        line: usize,
        /// What the parser expected.
        message: String,
    },
    /// A variant reads traits the campaign's purpose may not use.
    #[error(
        "{at}: reads {}, which this campaign's purpose may not use; it may use {}",
        list(traits), if allowed.is_empty() { "no trait".to_string() } else { list(allowed) }
    )]
    TraitNotAllowed {
        /// Where.
        at: Variant,
        /// The refused traits.
        traits: Vec<String>,
        /// The traits the purpose allows.
        allowed: Vec<String>,
    },
    /// A variant handles `traits` as a whole, so the traits it reads cannot be checked.
    #[error("{at}: read each trait by its name (`traits.first_name`), not `traits` as a whole")]
    WholeTraits {
        /// Where.
        at: Variant,
    },
    /// A variant reads names that are not in a message's context.
    #[error("{at}: {} not in a message's context ({}){}", list(names), CONTEXT.join(", "), hint(names))]
    UnknownVariable {
        /// Where.
        at: Variant,
        /// The unknown names.
        names: Vec<String>,
    },
    /// A render used up its [`FUEL`]: a loop runs too long.
    #[error("{at}: stopped after {FUEL} steps; a loop runs too long")]
    OutOfFuel {
        /// Where.
        at: Variant,
    },
    /// A render produced more than [`MAX_OUTPUT`].
    #[error("{at}: the message is over {MAX_OUTPUT} bytes")]
    OutputTooLarge {
        /// Where.
        at: Variant,
    },
    /// A render failed on a value (a filter given the wrong type, a division by zero…).
    #[error("{at}{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Render {
        /// Where.
        at: Variant,
        /// The line, from 1, when known.
        line: Option<usize>,
        /// What went wrong.
        message: String,
    },
}

fn list(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// The usual slip is forgetting the `traits.` prefix.
fn hint(names: &[String]) -> String {
    match names.first() {
        Some(n) if names.len() == 1 => format!("; for a trait, write `traits.{n}`"),
        _ => String::new(),
    }
}

/// A voucher as a template shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VoucherView {
    /// The code to type at checkout.
    pub code: String,
    /// Its value in `currency`.
    pub value: f64,
    /// ISO 4217 code (`EUR`).
    pub currency: String,
    /// The last day it can be used.
    pub expires_at: Date,
}

/// Links every marketing message carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    /// The person's preference centre.
    pub preferences: String,
    /// One-click unsubscribe from this purpose.
    pub unsubscribe: String,
}

/// What a template sees for one person.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Context {
    /// The person's traits the campaign's purpose may use, and only those.
    pub traits: BTreeMap<String, serde_json::Value>,
    /// The voucher given with this message, if any.
    pub voucher: Option<VoucherView>,
    /// Suggested products, each an object (see [`super::suggest::Suggestion`]).
    pub suggestions: Vec<serde_json::Value>,
    /// Preference and unsubscribe links.
    pub links: Links,
    /// The campaign's name.
    pub campaign: String,
}

/// A message ready to send or preview.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rendered {
    /// The language it was rendered in: French when English was asked for but not written.
    pub lang: Lang,
    /// The subject (empty when the template has none).
    pub subject: String,
    /// The text.
    pub body: String,
}

/// Checks a template before it is saved: every variant parses, fits [`MAX_SOURCE`], and reads
/// only the context and the `allowed_traits` of the campaign's purpose. Returns the traits it
/// reads, sorted.
pub fn check(t: &MessageTemplate, allowed_traits: &BTreeSet<String>) -> Result<Vec<String>, TemplateError> {
    if t.body.fr.trim().is_empty() {
        return Err(TemplateError::EmptyBody);
    }
    let env = environment();
    let globals: BTreeSet<&str> = env.globals().map(|(name, _)| name).collect();
    let mut used = BTreeSet::new();
    for (part, text) in [(Part::Subject, &t.subject), (Part::Body, &t.body)] {
        for (source, lang) in text.variants() {
            let at = Variant { part, lang };
            let template = compile(&env, source, at)?;
            let mut refused = BTreeSet::new();
            let mut unknown = BTreeSet::new();
            for name in template.undeclared_variables(true) {
                let mut path = name.split('.');
                match (path.next().unwrap_or_default(), path.next()) {
                    ("traits", None) => return Err(TemplateError::WholeTraits { at }),
                    ("traits", Some(t)) if allowed_traits.contains(t) => {
                        used.insert(t.to_string());
                    }
                    ("traits", Some(t)) => {
                        refused.insert(t.to_string());
                    }
                    (top, _) if CONTEXT.contains(&top) || globals.contains(top) => {}
                    (top, _) => {
                        unknown.insert(top.to_string());
                    }
                }
            }
            if !refused.is_empty() {
                return Err(TemplateError::TraitNotAllowed {
                    at,
                    traits: refused.into_iter().collect(),
                    allowed: allowed_traits.iter().cloned().collect(),
                });
            }
            if !unknown.is_empty() {
                return Err(TemplateError::UnknownVariable {
                    at,
                    names: unknown.into_iter().collect(),
                });
            }
        }
    }
    Ok(used.into_iter().collect())
}

/// Renders a template for one person in `lang` (`fr` or `en`, anything else and a missing
/// English variant falling back to French): the message that is sent, and its preview.
pub fn render(t: &MessageTemplate, lang: &str, ctx: &Context) -> Result<Rendered, TemplateError> {
    let asked = Lang::parse(lang);
    let (body, lang) = t.body.get(asked);
    // The subject follows the body's language, so a message never mixes the two.
    let (subject, _) = t.subject.get(lang);
    let env = environment();
    let shown = Shown::new(ctx, lang);
    Ok(Rendered {
        lang,
        subject: run(
            &env,
            subject,
            Variant {
                part: Part::Subject,
                lang,
            },
            &shown,
        )?,
        body: run(&env, body, Variant { part: Part::Body, lang }, &shown)?,
    })
}

/// The environment every template runs in; see the module's design notes for each setting.
fn environment<'s>() -> Environment<'s> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env
}

fn compile<'e, 's>(
    env: &'e Environment<'s>,
    source: &'s str,
    at: Variant,
) -> Result<minijinja::Template<'e, 's>, TemplateError> {
    if source.len() > MAX_SOURCE {
        return Err(TemplateError::TooLarge { at, size: source.len() });
    }
    env.template_from_str(source).map_err(|e| TemplateError::Syntax {
        at,
        line: e.line().unwrap_or(1),
        message: message(&e),
    })
}

fn run(env: &Environment<'_>, source: &str, at: Variant, ctx: &Shown<'_>) -> Result<String, TemplateError> {
    let template = compile(env, source, at)?;
    let mut out = Capped::default();
    match template.render_captured_to(ctx, &mut out) {
        Ok(_) => Ok(String::from_utf8_lossy(&out.bytes).into_owned()),
        Err(_) if out.overflowed => Err(TemplateError::OutputTooLarge { at }),
        Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(TemplateError::OutOfFuel { at }),
        Err(e) => Err(TemplateError::Render {
            at,
            line: e.line(),
            message: message(&e),
        }),
    }
}

/// minijinja's own message, without the template name it appends (`<string>` says nothing).
fn message(e: &minijinja::Error) -> String {
    e.detail().map_or_else(|| e.kind().to_string(), str::to_string)
}

/// Collects output and refuses to grow past [`MAX_OUTPUT`], which stops the render there.
#[derive(Default)]
struct Capped {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_OUTPUT {
            self.overflowed = true;
            return Err(io::Error::other("message too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The context as the template sees it: null traits left out, so they render as nothing rather
/// than `none`, and the voucher formatted for the message's language.
#[derive(Serialize)]
struct Shown<'a> {
    traits: BTreeMap<&'a str, &'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    voucher: Option<ShownVoucher<'a>>,
    suggestions: &'a [serde_json::Value],
    links: &'a Links,
    campaign: &'a str,
}

#[derive(Serialize)]
struct ShownVoucher<'a> {
    code: &'a str,
    value: String,
    currency: &'a str,
    expires_at: String,
}

impl<'a> Shown<'a> {
    fn new(ctx: &'a Context, lang: Lang) -> Shown<'a> {
        Shown {
            traits: ctx
                .traits
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.as_str(), v))
                .collect(),
            voucher: ctx.voucher.as_ref().map(|v| ShownVoucher {
                code: &v.code,
                value: money(v.value, &v.currency, lang),
                currency: &v.currency,
                expires_at: long_date(v.expires_at, lang),
            }),
            suggestions: &ctx.suggestions,
            links: &ctx.links,
            campaign: &ctx.campaign,
        }
    }
}

/// `10 €`, `7,50 €` in French; `€10`, `€7.50` in English. Whole amounts drop their cents, as
/// vouchers are usually written. Spaces are plain, not non-breaking: a non-breaking space would
/// push an SMS out of the GSM alphabet and double its cost.
fn money(value: f64, currency: &str, lang: Lang) -> String {
    let cents = (value * 100.0).round() as i64;
    let (units, cents) = (cents / 100, (cents % 100).abs());
    let separator = if lang == Lang::Fr { ',' } else { '.' };
    let amount = if cents == 0 {
        units.to_string()
    } else {
        format!("{units}{separator}{cents:02}")
    };
    let symbol = match currency {
        "EUR" => Some("€"),
        "GBP" => Some("£"),
        "USD" => Some("$"),
        _ => None,
    };
    match (lang, symbol) {
        (Lang::Fr, Some(s)) => format!("{amount} {s}"),
        (Lang::Fr, None) => format!("{amount} {currency}"),
        (Lang::En, Some(s)) => format!("{s}{amount}"),
        (Lang::En, None) => format!("{currency} {amount}"),
    }
}

/// `1er mars 2027`, `10 mars 2027`; `1 March 2027`.
fn long_date(d: Date, lang: Lang) -> String {
    const FR: [&str; 12] = [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ];
    let month = usize::from(d.month().unsigned_abs()) - 1;
    match lang {
        Lang::Fr if d.day() == 1 => format!("1er {} {}", FR[month], d.year()),
        Lang::Fr => format!("{} {} {}", d.day(), FR[month], d.year()),
        Lang::En => d.strftime("%-d %B %Y").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use serde_json::json;

    fn allowed(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn template(subject: (&str, Option<&str>), body: (&str, Option<&str>)) -> MessageTemplate {
        MessageTemplate {
            subject: Localized {
                fr: subject.0.into(),
                en: subject.1.map(Into::into),
            },
            body: Localized {
                fr: body.0.into(),
                en: body.1.map(Into::into),
            },
        }
    }

    fn birthday() -> MessageTemplate {
        template(
            (
                "Joyeux anniversaire {{ traits.first_name }} !",
                Some("Happy birthday {{ traits.first_name }}!"),
            ),
            (
                "Bonjour {{ traits.first_name }},\n\
                 {% if voucher %}\n\
                 Voici {{ voucher.value }} offerts avec le code {{ voucher.code }}, \
                 jusqu'au {{ voucher.expires_at }}.\n\
                 {% endif %}\n\
                 Pour vous : {% for s in suggestions %}{{ s.name }}{% if not loop.last %}, {% endif %}{% endfor %}\n\
                 Se désinscrire : {{ links.unsubscribe }}",
                Some(
                    "Hello {{ traits.first_name }},\n\
                     {% if voucher %}\n\
                     Here is {{ voucher.value }} off with code {{ voucher.code }}, until {{ voucher.expires_at }}.\n\
                     {% endif %}\n\
                     For you: {% for s in suggestions %}{{ s.name }}{% if not loop.last %}, {% endif %}{% endfor %}\n\
                     Unsubscribe: {{ links.unsubscribe }}",
                ),
            ),
        )
    }

    fn camille() -> Context {
        Context {
            traits: BTreeMap::from([
                ("first_name".to_string(), json!("Camille")),
                ("city".to_string(), serde_json::Value::Null),
            ]),
            voucher: Some(VoucherView {
                code: "ANNIV-7Q2X".into(),
                value: 10.0,
                currency: "EUR".into(),
                expires_at: date(2027, 4, 1),
            }),
            suggestions: vec![
                json!({"product_id": "alb-0312", "name": "Kind of Blue"}),
                json!({"name": "Blue Train"}),
            ],
            links: Links {
                preferences: "https://shop.example/prefs/abc".into(),
                unsubscribe: "https://shop.example/unsub/abc".into(),
            },
            campaign: "Joyeux anniversaire".into(),
        }
    }

    #[test]
    fn a_birthday_message_renders_in_french_and_english() {
        let t = birthday();
        assert_eq!(
            check(&t, &allowed(&["first_name", "email"])),
            Ok(vec!["first_name".to_string()])
        );

        let fr = render(&t, "fr", &camille()).unwrap();
        assert_eq!(fr.lang, Lang::Fr);
        assert_eq!(fr.subject, "Joyeux anniversaire Camille !");
        assert_eq!(
            fr.body,
            "Bonjour Camille,\n\n\
             Voici 10 € offerts avec le code ANNIV-7Q2X, jusqu'au 1er avril 2027.\n\n\
             Pour vous : Kind of Blue, Blue Train\n\
             Se désinscrire : https://shop.example/unsub/abc"
        );

        let en = render(&t, "en-GB", &camille()).unwrap();
        assert_eq!(en.lang, Lang::En);
        assert_eq!(en.subject, "Happy birthday Camille!");
        assert_eq!(
            en.body,
            "Hello Camille,\n\n\
             Here is €10 off with code ANNIV-7Q2X, until 1 April 2027.\n\n\
             For you: Kind of Blue, Blue Train\n\
             Unsubscribe: https://shop.example/unsub/abc"
        );
    }

    #[test]
    fn english_readers_get_french_when_there_is_no_english() {
        let t = template(("", None), ("Bonjour {{ traits.first_name }}", Some("  ")));
        let r = render(&t, "en", &camille()).unwrap();
        assert_eq!(
            (r.lang, r.subject.as_str(), r.body.as_str()),
            (Lang::Fr, "", "Bonjour Camille")
        );
        assert_eq!(render(&t, "de", &camille()).unwrap().lang, Lang::Fr);
    }

    #[test]
    fn missing_and_null_values_render_as_nothing() {
        let t = template(
            ("", None),
            (
                "Bonjour {{ traits.first_name }}{{ traits.city }}{{ voucher.code }}{{ traits.address.city }}.",
                None,
            ),
        );
        let ctx = Context {
            traits: BTreeMap::from([("city".to_string(), serde_json::Value::Null)]),
            ..Context::default()
        };
        assert_eq!(render(&t, "fr", &ctx).unwrap().body, "Bonjour .");
    }

    #[test]
    fn text_is_not_html_escaped() {
        let t = template(("", None), ("{{ traits.last_name }}", None));
        let ctx = Context {
            traits: BTreeMap::from([("last_name".to_string(), json!("O'Brien & <fils>"))]),
            ..Context::default()
        };
        assert_eq!(render(&t, "fr", &ctx).unwrap().body, "O'Brien & <fils>");
    }

    #[test]
    fn a_trait_the_purpose_may_not_use_is_refused_when_saved() {
        let t = template(
            ("", None),
            ("Bonjour {{ traits.first_name }}", Some("{{ traits.gender|upper }}")),
        );
        let e = check(&t, &allowed(&["first_name", "email"])).unwrap_err();
        assert_eq!(
            e,
            TemplateError::TraitNotAllowed {
                at: Variant {
                    part: Part::Body,
                    lang: Lang::En
                },
                traits: vec!["gender".into()],
                allowed: vec!["email".into(), "first_name".into()],
            }
        );
        assert_eq!(
            e.to_string(),
            "body (en): reads `gender`, which this campaign's purpose may not use; it may use `email`, `first_name`"
        );
    }

    #[test]
    fn traits_are_read_by_name_only() {
        for body in [
            "{{ traits['gender'] }}",
            "{% set t = traits %}{{ t.gender }}",
            "{{ traits|length }}",
        ] {
            let e = check(&template(("", None), (body, None)), &allowed(&["gender"])).unwrap_err();
            assert!(matches!(e, TemplateError::WholeTraits { .. }), "{body}: {e}");
        }
    }

    #[test]
    fn names_outside_the_context_are_refused_with_a_hint() {
        let t = template(
            ("Bonjour {{ first_name }}", None),
            ("{% for i in range(3) %}{{ i }}{% endfor %}", None),
        );
        let e = check(&t, &allowed(&["first_name"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "subject (fr): `first_name` not in a message's context (traits, voucher, suggestions, links, campaign); \
             for a trait, write `traits.first_name`"
        );
    }

    #[test]
    fn a_runaway_loop_stops_on_fuel() {
        let t = template(
            ("", None),
            (
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
                None,
            ),
        );
        assert_eq!(check(&t, &allowed(&[])), Ok(vec![]));
        let e = render(&t, "fr", &Context::default()).unwrap_err();
        assert_eq!(
            e,
            TemplateError::OutOfFuel {
                at: Variant {
                    part: Part::Body,
                    lang: Lang::Fr
                }
            }
        );
    }

    #[test]
    fn output_is_capped() {
        let t = template(
            ("", None),
            ("{% for i in range(300) %}{{ 'x' * 1000 }}{% endfor %}", None),
        );
        assert!(matches!(
            render(&t, "fr", &Context::default()),
            Err(TemplateError::OutputTooLarge { .. })
        ));
    }

    #[test]
    fn an_oversize_source_is_refused() {
        let big = "x".repeat(MAX_SOURCE + 1);
        let t = template(("", None), ("Bonjour", Some(&big)));
        let e = check(&t, &allowed(&[])).unwrap_err();
        assert_eq!(e.to_string(), "body (en): 16385 bytes, a template holds at most 16384");
        assert!(matches!(
            render(&t, "en", &Context::default()),
            Err(TemplateError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let t = template(("", None), ("Bonjour,\n\n{{ traits.first_name }\nÀ bientôt", None));
        match check(&t, &allowed(&["first_name"])).unwrap_err() {
            TemplateError::Syntax { at, line, message } => {
                assert_eq!((at.part, at.lang, line), (Part::Body, Lang::Fr, 3));
                assert!(!message.is_empty() && !message.contains("<string>"), "{message}");
            }
            e => panic!("expected a syntax error, got {e}"),
        }
    }

    #[test]
    fn a_message_needs_a_french_body() {
        let t = template(("Sujet", None), ("  ", Some("Hello")));
        assert_eq!(check(&t, &allowed(&[])), Err(TemplateError::EmptyBody));
    }

    #[test]
    fn amounts_and_dates_follow_the_language() {
        assert_eq!(money(7.5, "EUR", Lang::Fr), "7,50 €");
        assert_eq!(money(7.5, "EUR", Lang::En), "€7.50");
        assert_eq!(money(20.0, "CHF", Lang::Fr), "20 CHF");
        assert_eq!(money(20.0, "CHF", Lang::En), "CHF 20");
        assert_eq!(long_date(date(2027, 8, 15), Lang::Fr), "15 août 2027");
        assert_eq!(long_date(date(2027, 8, 15), Lang::En), "15 August 2027");
    }
}
