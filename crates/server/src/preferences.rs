//! The preference centre: where a person sees every purpose, what it means, its state and its
//! history, and changes or withdraws consent in one click — reached from a signed link in every
//! message, or from the cookie banner, without an account.
//!
//! # Design
//!
//! The page is rendered on the server and works without JavaScript: each purpose is a form
//! with one button (grant or withdraw), posted back to the same URL, which records the decision
//! durably and redirects to the page (post/redirect/get), so a reload never records twice. The
//! signed token in the URL is the only credential and names the only subject the page can show
//! or change. A bad token — forged, altered, expired, malformed — gets the same answer, which
//! reveals nothing.

use crate::consent::current_state;
use crate::error::ApiError;
use crate::ops::escape;
use crate::{AppState, Shared};
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use confiance_core::catalog::{LegalBasis, Purpose};
use confiance_core::consent::link::LinkKey;
use confiance_core::consent::{Decision, IdKind, Method, Notice, Status, Subject};
use confiance_store::Access;
use serde::Deserialize;

/// The preference-centre routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/preferences", get(page).post(change))
        .route("/preferences/rights", axum::routing::post(request_right))
}

/// The query string of the page.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    token: Option<String>,
    lang: Option<String>,
    saved: Option<String>,
    requested: Option<i64>,
}

/// A change posted from the page.
#[derive(Debug, Deserialize)]
pub struct ChangeForm {
    purpose: Option<String>,
    action: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lang {
    Fr,
    En,
}

impl Lang {
    fn of(q: Option<&str>) -> Self {
        if q == Some("en") { Lang::En } else { Lang::Fr }
    }

    fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }

    fn t(self, fr: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Fr => fr,
            Lang::En => en,
        }
    }
}

impl AppState {
    async fn subject_of(&self, token: Option<&str>) -> Result<Option<Subject>, ApiError> {
        let Some(token) = token else { return Ok(None) };
        let key = LinkKey::derive(self.secret().await?);
        Ok(key.verify(token, self.clock.now()).ok())
    }

    /// The purposes a subject may decide on here: the banner's for a browser, every purpose
    /// based on consent for a known person.
    fn decidable(&self, subject: &Subject) -> impl Iterator<Item = &Purpose> {
        let browser = subject.kind() == IdKind::AnonymousId;
        self.catalog
            .purposes
            .values()
            .filter(move |p| p.legal_basis == LegalBasis::Consent && (!browser || p.banner))
    }
}

fn invalid_link(lang: Lang) -> Response {
    let body = format!(
        r#"<!doctype html><html lang="{code}"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="stylesheet" href="/preferences.css"></head>
<body><main><h1>{title}</h1><p>{text}</p></main></body></html>"#,
        code = lang.code(),
        title = lang.t("Lien invalide ou expiré", "Invalid or expired link"),
        text = lang.t(
            "Ce lien ne permet pas d'accéder à des préférences. Utilisez le lien le plus récent reçu dans un de nos messages, ou le lien « Cookies » du site.",
            "This link does not open any preferences. Use the latest link from one of our messages, or the site's “Cookies” link."
        ),
    );
    (StatusCode::FORBIDDEN, Html(body)).into_response()
}

fn mask(subject: &Subject) -> String {
    let v = subject.value();
    match subject.kind() {
        IdKind::Email => match v.split_once('@') {
            Some((local, domain)) => format!("{}…@{domain}", local.chars().next().unwrap_or('?')),
            None => "…".into(),
        },
        IdKind::Phone => format!("…{}", &v[v.len().saturating_sub(2)..]),
        IdKind::UserId | IdKind::AnonymousId => {
            format!("{}…", v.chars().take(4).collect::<String>())
        }
    }
}

fn status_label(lang: Lang, status: Option<Status>) -> (&'static str, &'static str) {
    match status {
        Some(Status::Granted) => (lang.t("Accepté", "Accepted"), "on"),
        Some(Status::Denied) => (lang.t("Refusé", "Refused"), "off"),
        Some(Status::Withdrawn) => (lang.t("Retiré", "Withdrawn"), "off"),
        Some(Status::Objected) => (lang.t("Opposition enregistrée", "Objected"), "off"),
        Some(Status::Restricted) => (
            lang.t("Usage limité (conservé seulement)", "Restricted (kept only)"),
            "off",
        ),
        None => (
            lang.t("Jamais demandé — refusé par défaut", "Never asked — refused by default"),
            "off",
        ),
    }
}

fn basis_text(lang: Lang, basis: LegalBasis) -> &'static str {
    match basis {
        LegalBasis::Consent => lang.t("votre consentement", "your consent"),
        LegalBasis::Contract => lang.t(
            "l'exécution de votre contrat (commandes, compte)",
            "performing your contract (orders, account)",
        ),
        LegalBasis::LegalObligation => lang.t("une obligation légale", "a legal obligation"),
        LegalBasis::LegitimateInterest => lang.t(
            "notre intérêt légitime, auquel vous pouvez vous opposer",
            "our legitimate interest, which you may object to",
        ),
    }
}

/// The preference centre page.
pub async fn page(State(app): State<Shared>, Query(q): Query<PageQuery>) -> Result<Response, ApiError> {
    let lang = Lang::of(q.lang.as_deref());
    let Some(subject) = app.subject_of(q.token.as_deref()).await? else {
        return Ok(invalid_link(lang));
    };
    let token = q.token.unwrap_or_default();
    let history = app.store.consent_history(Access::DataSubject, &subject).await?;
    let state = current_state(&history);
    let action = format!("/preferences?token={}&amp;lang={}", escape(&token), lang.code());
    let name = |p: &Purpose| {
        if lang == Lang::En {
            p.name_en.clone()
        } else {
            p.name.clone()
        }
    };
    let description = |p: &Purpose| {
        if lang == Lang::En {
            p.description_en.clone()
        } else {
            p.description.clone()
        }
    };

    let mut consented = String::new();
    for p in app.decidable(&subject) {
        let current = state.get(&p.id).map(|e| e.status);
        let (label, class) = status_label(lang, current);
        let granted = current == Some(Status::Granted);
        let (button_action, button_text) = if granted {
            ("withdraw", lang.t("Retirer mon consentement", "Withdraw my consent"))
        } else {
            ("grant", lang.t("Donner mon consentement", "Give my consent"))
        };
        let mut past = String::new();
        for e in history.iter().filter(|e| e.purpose == p.id).rev() {
            past.push_str(&format!(
                "<li><time datetime=\"{at}\">{day}</time> — {status} ({how})</li>",
                at = e.recorded_at,
                day = e.recorded_at.strftime("%Y-%m-%d %H:%M UTC"),
                status = status_label(lang, Some(e.status)).0,
                how = e.method.as_str().replace('_', " "),
            ));
        }
        let past = if past.is_empty() {
            String::new()
        } else {
            format!(
                "<details><summary>{}</summary><ul>{past}</ul></details>",
                lang.t("Historique", "History")
            )
        };
        consented.push_str(&format!(
            r#"<section class="purpose" id="p-{id}"><div class="head"><h3>{name}</h3><span class="state {class}" data-state="{state}">{label}</span></div>
<p>{description}</p><p class="meta">{recipients_label} : {recipients}. {retention_label} : {retention}.</p>
<form method="post" action="{action}"><input type="hidden" name="purpose" value="{id}"><button type="submit" name="action" value="{button_action}" data-purpose="{id}" class="{button_action}">{button_text}</button></form>{past}</section>"#,
            id = escape(&p.id),
            name = escape(&name(p)),
            description = escape(&description(p)),
            state = current.map_or("none", Status::as_str),
            recipients_label = lang.t("Destinataires", "Recipients"),
            recipients = escape(&p.recipients.join(", ")),
            retention_label = lang.t("Conservation", "Kept for"),
            retention = p.retention,
        ));
    }

    let mut necessary = String::new();
    for p in app
        .catalog
        .purposes
        .values()
        .filter(|p| p.legal_basis != LegalBasis::Consent)
    {
        necessary.push_str(&format!(
            "<li><strong>{}</strong> — {} <em>({} : {})</em></li>",
            escape(&name(p)),
            escape(&description(p)),
            lang.t("fondé sur", "based on"),
            basis_text(lang, p.legal_basis),
        ));
    }
    let saved = if q.saved.is_some() {
        format!(
            "<p class=\"saved\" role=\"status\">{}</p>",
            lang.t("Vos choix ont été enregistrés.", "Your choices have been saved.")
        )
    } else {
        String::new()
    };
    let requested = match q.requested {
        Some(id) => match app.store.request(id).await? {
            // Only a request about this very subject is acknowledged here.
            Some(r) if r.subject_type == subject.kind() && r.subject_value == subject.value() => format!(
                "<p class=\"saved\" role=\"status\">{} {} — {} {}.</p>",
                lang.t(
                    "Votre demande est enregistrée sous le numéro",
                    "Your request is recorded as number"
                ),
                r.id,
                lang.t("nous y répondrons au plus tard le", "we will answer by"),
                r.due_at
                    .to_zoned(confiance_core::privacy::requests::controller_tz())
                    .strftime("%Y-%m-%d"),
            ),
            _ => String::new(),
        },
        None => String::new(),
    };
    let rights_action = format!("/preferences/rights?token={}&amp;lang={}", escape(&token), lang.code());
    let mut right_forms = String::new();
    for (right, fr, en) in [
        ("access", "Obtenir une copie de mes données", "Get a copy of my data"),
        (
            "portability",
            "Recevoir mes données dans un format réutilisable",
            "Receive my data in a reusable format",
        ),
        (
            "objection",
            "M'opposer à toute prospection",
            "Object to all direct marketing",
        ),
        (
            "restriction",
            "Limiter l'usage de mes données",
            "Restrict the use of my data",
        ),
        ("erasure", "Effacer mes données", "Erase my data"),
    ] {
        right_forms.push_str(&format!(
            "<form method=\"post\" action=\"{rights_action}\" class=\"right\"><button type=\"submit\" name=\"right\" value=\"{right}\" data-right=\"{right}\" class=\"withdraw\">{}</button></form>",
            lang.t(fr, en)
        ));
    }
    let other_lang = if lang == Lang::En { "fr" } else { "en" };
    let controller = &app.catalog.controller;
    let body = format!(
        r#"<!doctype html><html lang="{code}"><head><meta charset="utf-8"><title>{title} — {shop}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="referrer" content="no-referrer"><link rel="stylesheet" href="/preferences.css"></head>
<body><main>
<p class="lang"><a href="/preferences?token={token}&amp;lang={other_lang}" hreflang="{other_lang}">{switch}</a></p>
<h1>{title}</h1>
<p>{intro} <strong>{who}</strong>.</p>{saved}
<h2>{consent_title}</h2><p>{consent_intro}</p>
<form method="post" action="{action}" class="all"><button type="submit" name="action" value="withdraw_all" class="withdraw">{withdraw_all}</button></form>
{consented}
<h2>{necessary_title}</h2><ul class="necessary">{necessary}</ul>
<h2 id="droits">{rights_title}</h2>{requested}<p>{rights}</p>{right_forms}<p>{dpo} : <a href="mailto:{dpo_contact}">{dpo_contact}</a> — {controller_name}, {address}.</p>
</main></body></html>"#,
        code = lang.code(),
        shop = escape(&controller.name),
        token = escape(&token),
        switch = lang.t("English", "Français"),
        title = lang.t("Vos préférences", "Your preferences"),
        intro = lang.t("Préférences de", "Preferences of"),
        who = escape(&mask(&subject)),
        consent_title = lang.t("Ce que nous faisons avec votre accord", "What we do with your consent"),
        consent_intro = lang.t(
            "Vous pouvez donner ou retirer votre consentement à tout moment, en un clic. Un retrait prend effet immédiatement.",
            "You can give or withdraw your consent at any time, in one click. A withdrawal takes effect immediately."
        ),
        withdraw_all = lang.t("Tout retirer", "Withdraw everything"),
        necessary_title = lang.t("Ce que nous faisons sans vous le demander", "What we do without asking you"),
        rights_title = lang.t("Vos droits", "Your rights"),
        rights = lang.t(
            "Vous pouvez obtenir une copie de vos données, les faire rectifier ou effacer, en limiter l'usage ou vous opposer à leur traitement, notamment à toute prospection, à tout moment et gratuitement. Vous pouvez aussi saisir la CNIL.",
            "You may get a copy of your data, have it corrected or erased, restrict its use or object to its processing — in particular to any direct marketing — at any time and free of charge. You may also complain to the CNIL."
        ),
        dpo = lang.t("Délégué à la protection des données", "Data protection officer"),
        dpo_contact = escape(&controller.dpo_contact),
        controller_name = escape(&controller.name),
        address = escape(&controller.address),
    );
    Ok(([(header::CACHE_CONTROL, "no-store")], Html(body)).into_response())
}

/// Records a change made on the page, then shows the page again.
pub async fn change(
    State(app): State<Shared>,
    Query(q): Query<PageQuery>,
    crate::banner::ClientIp(ip): crate::banner::ClientIp,
    headers: HeaderMap,
    Form(form): Form<ChangeForm>,
) -> Result<Response, ApiError> {
    let lang = Lang::of(q.lang.as_deref());
    let Some(subject) = app.subject_of(q.token.as_deref()).await? else {
        return Ok(invalid_link(lang));
    };
    let purposes: Vec<&Purpose> = match (form.action.as_str(), form.purpose.as_deref()) {
        ("withdraw_all", _) => app.decidable(&subject).collect(),
        ("grant" | "withdraw", Some(id)) => app.decidable(&subject).filter(|p| p.id == id).collect(),
        _ => Vec::new(),
    };
    if purposes.is_empty() {
        return Err(ApiError::new(
            confiance_core::ErrorCode::InvalidField,
            "unknown purpose or action",
        ));
    }
    let history = app.store.consent_history(Access::DataSubject, &subject).await?;
    let state = current_state(&history);
    let secret = app.secret().await?;
    let now = app.clock.now();
    let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    let mut decisions = Vec::new();
    for p in purposes {
        let status = match form.action.as_str() {
            "grant" => Status::Granted,
            // Withdrawing what was never granted is recorded as a refusal, so the ledger says
            // what the person did without claiming a consent existed.
            _ if state.get(&p.id).is_some_and(|e| e.status == Status::Granted) => Status::Withdrawn,
            _ if form.action == "withdraw_all" && state.get(&p.id).is_some_and(|e| e.status != Status::Granted) => {
                continue;
            }
            _ => Status::Denied,
        };
        decisions.push(Decision {
            subject: subject.clone(),
            purpose: p.id.clone(),
            status,
            method: Method::PreferenceCentre,
            recorded_at: now,
            notice: Some(Notice {
                version: app.catalog.consent.notice_version.clone(),
                hash: app.notice_hash().to_owned(),
            }),
            source_id: None,
            touchpoint: None,
            ip_hash: ip.as_deref().map(|ip| app.hash_ip(secret, ip)),
            ua_hash: ua.map(|ua| app.hash_ua(secret, ua)),
            proof: serde_json::json!({"page": "preference_centre", "language": lang.code()}),
        });
    }
    if !decisions.is_empty() {
        app.record_consents(decisions).await?;
    }
    let token = q.token.unwrap_or_default();
    let mut response =
        Redirect::to(&format!("/preferences?token={token}&lang={}&saved=1", lang.code())).into_response();
    // Reached from the browser whose choices these are: its cookie follows the change, so the
    // banner's script stops sending what is no longer consented.
    if crate::banner::cookie_subject(&app, secret, &headers).as_ref() == Some(&subject) {
        let view = app.store.consent_view(std::slice::from_ref(&subject)).await?;
        let choices = app
            .catalog
            .purposes
            .values()
            .filter(|p| p.banner)
            .map(|p| {
                let granted = view.get(&subject, &p.id).is_some_and(|s| s.status == Status::Granted);
                (p.id.clone(), serde_json::json!(u8::from(granted)))
            })
            .collect();
        let (_, cookie) = app.consent_cookie(secret, &headers, subject.value(), choices);
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// A right exercised from the page.
#[derive(Debug, Deserialize)]
pub struct RightForm {
    right: String,
}

/// Records a request made from the preference centre. The signed link proves who the person is,
/// so the request is verified and in progress at once (Art. 12(6) needs no more).
pub async fn request_right(
    State(app): State<Shared>,
    Query(q): Query<PageQuery>,
    Form(form): Form<RightForm>,
) -> Result<Response, ApiError> {
    let lang = Lang::of(q.lang.as_deref());
    let Some(subject) = app.subject_of(q.token.as_deref()).await? else {
        return Ok(invalid_link(lang));
    };
    let right = confiance_core::privacy::requests::Right::parse(&form.right)?;
    let request = confiance_core::privacy::requests::Request::receive(
        right,
        &subject,
        "preference_centre",
        true,
        serde_json::Value::Null,
        "subject",
        app.clock.now(),
        &confiance_core::privacy::requests::controller_tz(),
    );
    let request = app.store.insert_request(request).await?;
    let token = q.token.unwrap_or_default();
    Ok(Redirect::to(&format!(
        "/preferences?token={token}&lang={}&requested={}#droits",
        lang.code(),
        request.id
    ))
    .into_response())
}
