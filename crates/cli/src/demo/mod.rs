//! `confiance demo`: a French online music shop with 10,000 synthetic customers, built in a
//! fresh data directory and served.
//!
//! # Design
//!
//! The demo goes through the real pipeline, not around it: it creates the catalog's sources,
//! records the newsletter opt-ins as consents (dated when they were given), then feeds every
//! generated message to the same ingestion as the tracking API — catalog, consent signals and
//! enforcement, durable storage. What the demo shows is therefore what Confiance would have kept
//! from such a shop: visitors who refused measurement leave no page views behind.

pub mod generate;

use anyhow::{Context, Result, bail};
use confiance_core::catalog::Catalog;
use confiance_core::clock::SystemClock;
use confiance_core::consent::{Decision, IdKind, Method, Notice, Status, Subject};
use confiance_core::source::{KeyDigest, Source, SourceName, WriteKey};
use confiance_server::collect::ingest_messages;
use confiance_server::{AppState, Options};
use confiance_store::{Role, Store};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Marks a data directory as the demo's own, so that it may be rebuilt from scratch.
const MARKER: &str = ".confiance-demo";
/// Messages handed to the pipeline at once.
const CHUNK: usize = 2_000;

/// What the demo built, for the operator.
pub struct Built {
    /// Write keys by source name.
    pub keys: BTreeMap<String, String>,
    /// The admin token.
    pub admin_token: String,
    /// Messages generated, stored, and withheld for lack of consent.
    pub generated: usize,
    /// Stored.
    pub stored: usize,
    /// Withheld (no legal basis).
    pub withheld: usize,
    /// Consents recorded from forms.
    pub opt_ins: usize,
    /// A customer with orders, to show in the examples.
    pub example_user: Option<String>,
}

/// Empties `dir` if it is a previous demo's, refuses if it holds anything else.
fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!(
                "{} is not empty and was not made by `confiance demo`; give another --data-dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(MARKER), "made by `confiance demo`; rebuilt on each run\n")?;
    Ok(())
}

/// Builds the demo shop in `dir` with `customers` synthetic customers.
pub async fn build(dir: &Path, customers: usize, admin_token: String) -> Result<(Store, Built)> {
    fresh_dir(dir)?;
    let store = Store::open_sqlite(dir).await?;
    let catalog = Catalog::builtin();
    store
        .put_token(&KeyDigest::of(&admin_token), Role::Admin, "demo")
        .await?;

    let mut sources: BTreeMap<String, Source> = BTreeMap::new();
    let mut keys = BTreeMap::new();
    for decl in catalog.sources.values() {
        let key = WriteKey::generate();
        let source = store
            .create_source(&SourceName::parse(&decl.name)?, decl.kind, &key.digest(), &key.prefix())
            .await?;
        keys.insert(decl.name.clone(), key.reveal().to_owned());
        sources.insert(decl.name.clone(), source);
    }

    let now = jiff::Timestamp::now();
    let messages = generate::generate(customers, 20_261_129, now);
    let generated = messages.len();
    let example_user = messages
        .iter()
        .filter(|m| m.message["event"] == "Order Completed")
        .find_map(|m| m.message["userId"].as_str().map(str::to_owned));

    // Newsletter sign-ups are opt-ins given on a form: the consent they record comes first, dated
    // when it was given, so that what the newsletter needs is kept.
    let notice = Notice {
        version: catalog.consent.notice_version.clone(),
        hash: "newsletter-form".into(),
    };
    let mut opt_ins = Vec::new();
    for m in messages
        .iter()
        .filter(|m| m.message["event"] == "Newsletter Subscribed")
    {
        let email = m.message.pointer("/context/traits/email").and_then(|e| e.as_str());
        let at = m.message["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        if let (Some(email), Some(at)) = (email, at) {
            opt_ins.push(Decision {
                subject: Subject::parse(IdKind::Email, email)?,
                purpose: "marketing_email".into(),
                status: Status::Granted,
                method: Method::Form,
                recorded_at: at,
                notice: Some(notice.clone()),
                source_id: sources.get(m.source).map(|s| s.id),
                touchpoint: Some("newsletter_signup".into()),
                ip_hash: None,
                ua_hash: None,
                proof: serde_json::json!({"message_id": m.message["messageId"], "placement": m.message.pointer("/properties/placement")}),
            });
        }
    }
    let opt_in_count = opt_ins.len();
    for chunk in opt_ins.chunks(CHUNK) {
        store.record_consents(chunk.to_vec()).await?;
    }

    let app = AppState::new(store.clone(), catalog, Arc::new(SystemClock));
    let mut by_source: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for m in messages {
        by_source.entry(m.source).or_default().push(m.message);
    }
    // The site first: its messages carry the banner's choices, which decide what the other
    // sources may keep about the same visitors (an account's gender, a questionnaire's hobbies).
    let mut by_source: Vec<(&str, Vec<serde_json::Value>)> = by_source.into_iter().collect();
    by_source.sort_by_key(|(name, _)| *name != "web");
    let (mut stored, mut withheld) = (0, 0);
    for (name, msgs) in by_source {
        let source = sources
            .get(name)
            .with_context(|| format!("the catalog declares no source `{name}`"))?;
        for chunk in msgs.chunks(CHUNK) {
            let outcome = ingest_messages(&app, source, chunk.to_vec(), now)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.into_error()))?;
            if let Some(r) = outcome.rejected.first() {
                bail!("the demo generated a message the pipeline rejects: {}", r.message);
            }
            stored += outcome.accepted;
            withheld += outcome.withheld.len();
        }
    }
    for (name, purpose, query, description) in SEGMENTS {
        let input = confiance_server::segments::SegmentInput {
            name: Some((*name).into()),
            purpose: Some((*purpose).into()),
            query: serde_json::json!(query),
            description: Some((*description).into()),
        };
        confiance_server::segments::save(&app, "demo", None, &input)
            .await
            .map_err(|e| anyhow::anyhow!("demo segment {name}: {}", e.into_error()))?;
    }
    // Birthday cards a week ahead: a legitimate interest, printed from the mailing list, so
    // the demo shows a campaign at work without an SMTP server.
    let card: confiance_core::activate::Campaign = serde_json::from_value(serde_json::json!({
        "name": "Carte d'anniversaire",
        "purpose": "marketing_postal",
        "channel": "postal",
        "trigger": {"date": {"field": "birthday", "days_before": 7, "local_hour": 9}},
        "steps": [{"template": {"subject": {"fr": ""},
                                "body": {"fr": "Joyeux anniversaire {{ traits.first_name }} ! Toute l'équipe de Vinyles & Cie vous souhaite une belle journée."}}}],
    }))?;
    confiance_server::activate::define(&app, &card)
        .await
        .map_err(|e| anyhow::anyhow!("demo campaign: {}", e.into_error()))?;
    Ok((
        store,
        Built {
            keys,
            admin_token,
            generated,
            stored,
            withheld,
            opt_ins: opt_in_count,
            example_user,
        },
    ))
}

/// The demo's saved segments: name, purpose, query, description.
const SEGMENTS: &[(&str, &str, &str, &str)] = &[
    (
        "Jeunes Parisiennes",
        "personalisation",
        "gender = \"female\" and birthday between 35 years ago and 18 years ago\nand city = \"Paris\"",
        "Femmes de 18 à 35 ans qui habitent Paris.",
    ),
    (
        "Jeunes surfeurs",
        "personalisation",
        "hobbies contains \"surf\" and birthday between 35 years ago and 18 years ago",
        "Les 18–35 ans qui surfent : pour la sélection « musiques de plage ».",
    ),
    (
        "Fidèles du jazz",
        "personalisation",
        "did \"Order Completed\" at least 2 times within 365 days and favourite_category = \"jazz\"",
        "Au moins deux commandes dans l'année, surtout du jazz.",
    ),
    (
        "Nouveaux abonnés newsletter",
        "marketing_email",
        "did \"Newsletter Subscribed\" within 90 days",
        "Inscrits à la newsletter depuis trois mois, qui l'ont accepté.",
    ),
];

/// Builds the demo, prints what to open, and serves it.
pub async fn run(dir: &Path, listen: SocketAddr) -> Result<()> {
    let admin_token = std::env::var("CONFIANCE_ADMIN_TOKEN").unwrap_or_else(|_| {
        let mut bytes = [0u8; 18];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        format!("demo-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
    });
    eprintln!("Building the demo shop in {} …", dir.display());
    let started = std::time::Instant::now();
    let (store, built) = build(dir, 10_000, admin_token).await?;
    eprintln!(
        "Built in {:.1} s: {} messages generated for 10,000 customers, {} stored, {} withheld for lack of consent, {} newsletter opt-ins recorded.",
        started.elapsed().as_secs_f64(),
        built.generated,
        built.stored,
        built.withheld,
        built.opt_ins
    );
    let options = Options {
        shop_write_key: built.keys.get("web").cloned(),
        ..Options::default()
    };
    crate::serve::serve(store, Catalog::builtin(), listen, options, |addr| {
        let base = format!("http://{addr}");
        println!();
        println!("Confiance demo — Vinyles & Cie, a French online music shop");
        println!();
        println!("  Home page (what was collected):  {base}/");
        println!("  The shop, with its cookie banner: {base}/demo/shop");
        println!("  API description (OpenAPI):        {base}/api/openapi.json");
        println!("  Metrics (Prometheus):             {base}/metrics");
        println!();
        println!("  Admin token: {}", built.admin_token);
        println!(
            "  Write key of the `web` source: {}",
            built.keys.get("web").map_or("", String::as_str)
        );
        println!();
        println!("  Try:");
        println!(
            "    curl -H 'Authorization: Bearer {}' {base}/api/v1/consent/stats",
            built.admin_token
        );
        println!(
            "    curl -H 'Authorization: Bearer {}' {base}/api/v1/segments",
            built.admin_token
        );
        println!(
            "    curl -H 'Authorization: Bearer {}' {base}/api/v1/campaigns/1/mailing-list",
            built.admin_token
        );
        if let Some(user) = &built.example_user {
            println!(
                "    curl -H 'Authorization: Bearer {}' '{base}/api/v1/events?user_id={user}'",
                built.admin_token
            );
        }
        println!();
        println!("Press Ctrl-C to stop.");
    })
    .await
}
