//! Campaigns as a customer and a marketer notice them: birthday emails that arrive once a year
//! at nine in the morning wherever the person lives, tour announcements that reach exactly the
//! fans who agreed, one-click unsubscribe that the next campaign respects, vouchers used once,
//! quiet hours and frequency caps with their reasons in the log. A real SMTP server (aiosmtpd)
//! receives the mail; a small one written here refuses it.

use crate::support::{ADMIN_TOKEN, SmtpSink, TestApp, read};
use confiance_server::Options;
use confiance_server::mail::Mailer;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

async fn shop(smtp: &SmtpSink) -> TestApp {
    let mailer = Mailer::new(
        &format!("smtp://127.0.0.1:{}", smtp.port),
        "Vinyles & Cie <bonjour@vinyles.example>",
    )
    .unwrap();
    TestApp::spawn_with(Options {
        mailer: Some(mailer),
        public_url: Some("http://shop.test".into()),
        ..Options::default()
    })
    .await
}

impl TestApp {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        read(req.send().await.unwrap()).await
    }

    /// A synthetic customer, identified on the site with their traits; `email_offers` says
    /// whether they opted in to offers by email.
    async fn customer(&self, id: &str, traits: Value, email_offers: bool) {
        let (status, body) = self
            .post(
                "/v1/identify",
                &json!({"userId": id, "traits": traits,
                        "context": {"consent": {"categoryPreferences": {"Personalization": true}}}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        if email_offers {
            let (status, body) = self
                .call(
                    reqwest::Method::POST,
                    "/api/v1/consents",
                    Some(json!({"subject": {"type": "user_id", "value": id}, "purpose": "marketing_email", "status": "granted"})),
                )
                .await;
            assert!(status < 300, "{body}");
        }
    }

    async fn campaign(&self, body: Value) -> i64 {
        let (status, c) = self.call(reqwest::Method::POST, "/api/v1/campaigns", Some(body)).await;
        assert_eq!(status, 201, "{c}");
        c["id"].as_i64().unwrap()
    }

    async fn tick(&self) {
        confiance_server::activate::tick(&self.state).await.unwrap();
    }

    async fn sends(&self, campaign: i64) -> Vec<Value> {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/campaigns/{campaign}/sends"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["sends"].as_array().unwrap().clone()
    }
}

/// A received message with its quoted-printable body decoded.
fn decoded(raw: &str) -> String {
    let split = raw.find("\r\n\r\n").or_else(|| raw.find("\n\n")).unwrap_or(raw.len());
    let (head, body) = raw.split_at(split);
    let joined = body.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'=', Some(hex)) if hex.iter().all(u8::is_ascii_hexdigit) => {
                out.push(u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap());
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    format!("{head}{}", String::from_utf8(out).unwrap())
}

fn header<'a>(mail: &'a str, name: &str) -> Option<&'a str> {
    mail.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
}

fn template(subject_fr: &str, body_fr: &str, subject_en: &str, body_en: &str) -> Value {
    json!({"subject": {"fr": subject_fr, "en": subject_en}, "body": {"fr": body_fr, "en": body_en}})
}

#[tokio::test]
async fn a_year_of_birthdays_each_once_at_nine_in_the_persons_time_zone() {
    let smtp = SmtpSink::start();
    let app = shop(&smtp).await;
    let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    app.clock.set(start);
    let people = [
        // Born on the spring-forward day, on 29 February, on the fall-back day, in Montreal…
        ("ana", "1990-03-29", "Europe/Paris", "fr", true),
        ("ben", "1996-02-29", "Europe/Paris", "en", true),
        ("chloe", "1985-11-01", "America/Montreal", "fr", true),
        ("dan", "1992-07-14", "Europe/Paris", "fr", true),
        ("eve", "1993-05-05", "Europe/Paris", "fr", false),
        ("fay", "1994-10-25", "Europe/Paris", "fr", true),
    ];
    for (id, birthday, tz, lang, opted_in) in people {
        app.customer(
            id,
            json!({"email": format!("{id}@example.org"), "first_name": id.to_uppercase(), "birthday": birthday,
                   "timezone": tz, "language": lang}),
            opted_in,
        )
        .await;
    }
    // Dan objects to direct marketing before his birthday.
    let (status, req) = app
        .call(
            reqwest::Method::POST,
            "/api/v1/requests",
            Some(json!({"type": "objection", "subject": {"type": "email", "value": "dan@example.org"}})),
        )
        .await;
    assert_eq!(status, 201, "{req}");
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/requests/{}/process", req["id"]),
            None,
        )
        .await;
    assert_eq!(status, 200);
    app.indexed().await;
    let id = app
        .campaign(json!({
            "name": "Joyeux anniversaire",
            "purpose": "marketing_email",
            "channel": "email",
            "trigger": {"date": {"field": "birthday", "days_before": 0, "local_hour": 9}},
            "voucher": {"value": 10.0, "valid_days": 30},
            "steps": [{"template": template(
                "Joyeux anniversaire {{ traits.first_name }} !",
                "Bonjour {{ traits.first_name }},\nvoici {{ voucher.value }} € : {{ voucher.code }}.\nVos préférences : {{ links.preferences }}",
                "Happy birthday {{ traits.first_name }}!",
                "Hello {{ traits.first_name }},\nhere is {{ voucher.value }} €: {{ voucher.code }}.\nYour preferences: {{ links.preferences }}")}],
        }))
        .await;

    // A year, one hour at a time.
    for hour in 1..=365 * 24 {
        app.clock.set(start + SignedDuration::from_hours(hour));
        app.tick().await;
    }
    // Running again at the same instant, as a restarted node would, sends nothing more.
    app.tick().await;
    app.tick().await;

    let sends = app.sends(id).await;
    let sent: Vec<&Value> = sends.iter().filter(|s| s["outcome"] == "sent").collect();
    assert_eq!(sent.len(), 4, "{sends:#?}");
    let local = |s: &Value, tz: &str| {
        let at: Timestamp = s["at"].as_str().unwrap().parse().unwrap();
        at.to_zoned(TimeZone::get(tz).unwrap()).datetime().to_string()
    };
    let by_profile = |n: usize| sent[n];
    let expected = [
        ("2026-02-28T09:00:00", "Europe/Paris"),     // ben: 29 February in a common year
        ("2026-03-29T09:00:00", "Europe/Paris"),     // ana: the morning after the clocks went forward
        ("2026-10-25T09:00:00", "Europe/Paris"),     // fay: the day the clocks go back
        ("2026-11-01T09:00:00", "America/Montreal"), // chloe, in her own time zone
    ];
    for (n, (when, tz)) in expected.iter().enumerate() {
        assert_eq!(local(by_profile(n), tz), *when, "{:#?}", by_profile(n));
    }
    let skipped: Vec<(&str, u64)> = sends
        .iter()
        .filter(|s| s["outcome"] == "skipped")
        .map(|s| (s["reason"].as_str().unwrap(), s["profile_id"].as_u64().unwrap()))
        .collect();
    let reasons: Vec<&str> = skipped.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        reasons,
        ["no_legal_basis", "objected"],
        "eve never agreed, dan objected: {sends:#?}"
    );

    let mails: Vec<String> = smtp.messages().iter().map(|m| decoded(m)).collect();
    assert_eq!(mails.len(), 4, "exactly one email per consenting person");
    let ben = mails.iter().find(|m| m.contains("To: ben@example.org")).unwrap();
    assert_eq!(header(ben, "Subject"), Some("Happy birthday BEN!"), "{ben}");
    assert!(ben.contains("Hello BEN,"), "{ben}");
    let unsubscribe = header(ben, "List-Unsubscribe").unwrap();
    assert!(unsubscribe.starts_with("<http://shop.test/unsubscribe?token="), "{ben}");
    assert_eq!(header(ben, "List-Unsubscribe-Post"), Some("List-Unsubscribe=One-Click"));
    assert!(
        ben.contains("http://shop.test/preferences?token="),
        "a preference-centre link in every message"
    );
    let ana = mails.iter().find(|m| m.contains("To: ana@example.org")).unwrap();
    assert_eq!(header(ana, "Subject").map(|s| s.contains("ANA")), Some(true), "{ana}");
    let figures = app
        .call(reqwest::Method::GET, &format!("/api/v1/campaigns/{id}"), None)
        .await
        .1;
    assert_eq!(figures["figures"]["sent"], 4, "{figures}");
    // Each decision shows in the person's timeline, with its reason.
    let (_, eve) = app
        .call(
            reqwest::Method::GET,
            "/api/v1/profiles/lookup?type=user_id&value=eve",
            None,
        )
        .await;
    let timeline: Vec<(&str, &str)> = eve["campaigns"]
        .as_array()
        .unwrap_or_else(|| panic!("{eve}"))
        .iter()
        .map(|s| (s["outcome"].as_str().unwrap(), s["reason"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(timeline, [("skipped", "no_legal_basis")]);
    assert_eq!(figures["figures"]["skipped"]["objected"], 1, "{figures}");
}

#[tokio::test]
async fn a_tour_reaches_the_fans_who_agreed_and_one_click_unsubscribe_holds() {
    let smtp = SmtpSink::start();
    let app = shop(&smtp).await;
    app.clock.set("2026-04-02T10:00:00Z".parse().unwrap());
    let fan = |artists: &[&str], city: &str| json!({"favorite_artists": artists, "city": city});
    for (id, artists, city, opted_in) in [
        ("gus", vec!["Daft Punk", "Air"], "Paris", true),
        ("hana", vec!["daft punk"], "Lyon", true),
        ("ivan", vec!["Daft Punk"], "Paris", false),
        ("jade", vec!["Justice"], "Paris", true),
    ] {
        let mut traits = fan(&artists, city);
        traits["email"] = json!(format!("{id}@example.org"));
        traits["first_name"] = json!(id);
        app.customer(id, traits, opted_in).await;
    }
    app.indexed().await;
    let id = app
        .campaign(json!({
            "name": "En tournée",
            "purpose": "marketing_email",
            "channel": "email",
            "trigger": {"happening": {"kind": "tour", "field": "favorite_artists", "near": false}},
            "voucher": {"value": 5.0, "valid_days": 10},
            "steps": [{"template": template(
                "{{ traits.first_name }}, ils partent en tournée",
                "Code {{ voucher.code }}. Se désinscrire : {{ links.unsubscribe }}", "On tour", "Code {{ voucher.code }}")}],
        }))
        .await;
    let (status, tour) = app
        .call(
            reqwest::Method::POST,
            "/api/v1/happenings",
            Some(json!({"kind": "tour", "about": "Daft Punk", "name": "Tournée 2026", "cities": ["Paris", "Lyon"]})),
        )
        .await;
    assert_eq!(status, 200, "{tour}");
    assert_eq!(tour["campaigns"][0]["matched"], 3, "{tour}");
    app.tick().await;
    let mails: Vec<String> = smtp.messages().iter().map(|m| decoded(m)).collect();
    let mut to: Vec<&str> = mails.iter().filter_map(|m| header(m, "To")).collect();
    to.sort();
    assert_eq!(
        to,
        ["gus@example.org", "hana@example.org"],
        "exactly the fans who agreed"
    );
    let reasons: Vec<Value> = app
        .sends(id)
        .await
        .iter()
        .filter(|s| s["outcome"] == "skipped")
        .map(|s| s["reason"].clone())
        .collect();
    assert_eq!(reasons, [json!("no_legal_basis")], "ivan is a fan without consent");

    // The voucher in Gus's mail works once.
    let gus = mails.iter().find(|m| m.contains("To: gus@example.org")).unwrap();
    let code = gus
        .split("Code ")
        .nth(1)
        .and_then(|r| r.split('.').next())
        .unwrap()
        .trim()
        .to_owned();
    let redeem = |code: String| {
        let app = &app;
        async move {
            app.call(
                reqwest::Method::POST,
                "/api/v1/vouchers/redeem",
                Some(json!({"code": code, "order_id": "cmd-1"})),
            )
            .await
        }
    };
    let (status, v) = redeem(code.clone()).await;
    assert_eq!((status, v["campaign_id"].as_i64()), (200, Some(id)), "{v}");
    let (status, again) = redeem(code.clone()).await;
    assert_eq!((status, again["reason"].as_str()), (400, Some("used")), "{again}");
    let (status, _) = redeem("NOPE-NOPE-NOPE".into()).await;
    assert_eq!(status, 404);

    // Hana unsubscribes in one click from her mail client (RFC 8058).
    let hana = mails.iter().find(|m| m.contains("To: hana@example.org")).unwrap();
    let link = header(hana, "List-Unsubscribe")
        .unwrap()
        .trim_matches(|c| c == '<' || c == '>')
        .replace("http://shop.test", &app.base);
    let resp = app
        .http
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let forged = app
        .http
        .post(link.replace("token=", "token=x"))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403, "a forged link changes nothing");

    // The next announcement skips her.
    app.clock.set("2026-05-02T10:00:00Z".parse().unwrap());
    app.call(
        reqwest::Method::POST,
        "/api/v1/happenings",
        Some(json!({"kind": "tour", "about": "Daft Punk", "name": "Tournée d'automne"})),
    )
    .await;
    app.tick().await;
    let sends = app.sends(id).await;
    assert_eq!(smtp.messages().len(), 3, "only Gus hears of the second tour");
    let last_skips: Vec<&str> = sends
        .iter()
        .skip(3)
        .filter(|s| s["outcome"] == "skipped")
        .map(|s| s["reason"].as_str().unwrap())
        .collect();
    assert_eq!(last_skips, ["no_legal_basis", "no_legal_basis"], "{sends:#?}");
    let (_, figures) = app
        .call(reqwest::Method::GET, &format!("/api/v1/campaigns/{id}"), None)
        .await;
    assert_eq!(
        (
            figures["figures"]["unsubscribed"].as_i64(),
            figures["figures"]["vouchers_redeemed"].as_i64()
        ),
        (Some(1), Some(1)),
        "{figures}"
    );
}

#[tokio::test]
async fn quiet_hours_and_frequency_caps_delay_with_their_reasons() {
    let smtp = SmtpSink::start();
    let app = shop(&smtp).await;
    // 22:30 in Paris.
    app.clock.set("2026-06-10T20:30:00Z".parse().unwrap());
    app.customer(
        "kim",
        json!({"email": "kim@example.org", "favorite_artists": ["Air"], "timezone": "Europe/Paris"}),
        true,
    )
    .await;
    app.indexed().await;
    let id = app
        .campaign(json!({
            "name": "Nouveautés",
            "purpose": "marketing_email",
            "channel": "email",
            "trigger": {"happening": {"kind": "release", "field": "favorite_artists"}},
            "quiet_hours": {"start": "21:00", "end": "08:00"},
            "frequency_cap": {"max": 1, "days": 7, "policy": "delay"},
            "steps": [{"template": template("Nouveau disque", "Il est sorti.", "New record", "Out now.")}],
        }))
        .await;
    let announce = |name: &'static str| {
        let app = &app;
        async move {
            app.call(
                reqwest::Method::POST,
                "/api/v1/happenings",
                Some(json!({"kind": "release", "about": "Air", "name": name})),
            )
            .await
        }
    };
    announce("Album").await;
    app.tick().await;
    assert!(smtp.messages().is_empty(), "nothing at 22:30");
    // 08:00 the next morning, local time.
    app.clock.set("2026-06-11T06:00:00Z".parse().unwrap());
    app.tick().await;
    assert_eq!(smtp.messages().len(), 1);
    announce("Single").await;
    app.tick().await;
    assert_eq!(smtp.messages().len(), 1, "one message a week at most");
    app.clock.set("2026-06-18T06:00:01Z".parse().unwrap());
    app.tick().await;
    assert_eq!(
        smtp.messages().len(),
        2,
        "the capped message goes when the week is over"
    );
    let log: Vec<(String, Option<String>)> = app
        .sends(id)
        .await
        .iter()
        .map(|s| {
            (
                s["outcome"].as_str().unwrap().to_owned(),
                s["reason"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let delayed = |r: &str| ("delayed".to_owned(), Some(r.to_owned()));
    let sent = ("sent".to_owned(), None);
    assert_eq!(
        log,
        [delayed("quiet_hours"), sent.clone(), delayed("frequency_cap"), sent],
        "every decision is logged with its reason"
    );
}

#[tokio::test]
async fn birthday_cards_go_to_a_printable_mailing_list() {
    let smtp = SmtpSink::start();
    let app = shop(&smtp).await;
    app.clock.set("2026-06-12T00:00:00Z".parse().unwrap());
    app.customer(
        "lea",
        json!({"first_name": "Léa", "last_name": "Martin", "birthday": "1990-06-20",
               "address": {"street": "3 rue des Lilas", "city": "Nantes", "postalCode": "44000", "country": "FR"}}),
        false,
    )
    .await;
    app.customer("max", json!({"first_name": "Max", "birthday": "1991-06-20"}), false)
        .await;
    app.indexed().await;
    let id = app
        .campaign(json!({
            "name": "Carte d'anniversaire",
            "purpose": "marketing_postal",
            "channel": "postal",
            "trigger": {"date": {"field": "birthday", "days_before": 7, "local_hour": 9}},
            "steps": [{"template": {"subject": {"fr": ""}, "body": {"fr": "Joyeux anniversaire {{ traits.first_name }} !"}}}],
        }))
        .await;
    for hour in 1..=48 {
        app.clock
            .set("2026-06-12T00:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_hours(hour));
        app.tick().await;
    }
    let outcomes: Vec<(String, Option<String>)> = app
        .sends(id)
        .await
        .iter()
        .map(|s| {
            (
                s["outcome"].as_str().unwrap().to_owned(),
                s["reason"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("sent".to_owned(), None),
            ("skipped".to_owned(), Some("no_address".to_owned()))
        ],
        "a legitimate interest needs no opt-in; Max gave no address"
    );
    let csv = app
        .http
        .get(app.url(&format!("/api/v1/campaigns/{id}/mailing-list")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        [
            "name,street,postal_code,city,country",
            "Léa Martin,3 rue des Lilas,44000,Nantes,FR"
        ]
    );
    let labels = app
        .http
        .get(app.url(&format!("/api/v1/campaigns/{id}/mailing-list?format=labels")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        labels.contains("@page") && labels.contains("Léa Martin<br>3 rue des Lilas<br>44000 Nantes"),
        "{labels}"
    );
}

#[tokio::test]
async fn suggestions_come_from_what_other_buyers_bought_and_skip_what_one_has() {
    let smtp = SmtpSink::start();
    let app = shop(&smtp).await;
    app.clock.set("2026-03-01T10:00:00Z".parse().unwrap());
    let product = |id: &str| json!({"product_id": id, "name": format!("Disque {id}"), "price": 20.0});
    for (user, bought) in [
        ("o1", vec!["A", "B"]),
        ("o2", vec!["A", "B", "C"]),
        ("o3", vec!["A", "C"]),
        ("o4", vec!["A"]),
        ("o5", vec!["D"]),
    ] {
        let products: Vec<Value> = bought.iter().map(|p| product(p)).collect();
        let (status, body) = app
            .post(
                "/v1/track",
                &json!({"userId": user, "event": "Order Completed",
                        "properties": {"order_id": format!("cmd-{user}"), "total": 20.0, "products": products}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    app.indexed().await;
    let (_, profile) = app
        .call(
            reqwest::Method::GET,
            "/api/v1/profiles/lookup?type=user_id&value=o4",
            None,
        )
        .await;
    let (status, s) = app
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/profiles/{}/suggestions", profile["id"]),
            None,
        )
        .await;
    assert_eq!(status, 200, "{s}");
    let ids: Vec<&str> = s["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["product_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["B", "C"],
        "bought with A by two people each; never A itself, never D: {s}"
    );
    assert_eq!(s["suggestions"][0]["because"], "A");
    let (status, bad) = app
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/profiles/{}/suggestions?k=0", profile["id"]),
            None,
        )
        .await;
    assert_eq!((status, bad["parameter"].as_str()), (400, Some("k")));
}

/// An SMTP relay that throttles: it answers `451` to the first `refusals` messages, then takes
/// them. Returns its port and the number of messages it took.
async fn throttling_relay(refusals: usize) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let taken = std::sync::Arc::new(AtomicUsize::new(0));
    let refused = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = taken.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (taken, refused) = (counter.clone(), refused.clone());
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 relay ready\r\n").await.unwrap();
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply: &[u8] = if in_data {
                        if line != "." {
                            continue;
                        }
                        in_data = false;
                        taken.fetch_add(1, Ordering::SeqCst);
                        b"250 queued\r\n"
                    } else {
                        match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                            Some("EHLO" | "HELO") => b"250 relay\r\n",
                            Some("MAIL") if refused.fetch_add(1, Ordering::SeqCst) < refusals => {
                                b"451 4.7.1 too many messages, slow down\r\n"
                            }
                            Some("DATA") => {
                                in_data = true;
                                b"354 go on\r\n"
                            }
                            Some("QUIT") => {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                return;
                            }
                            _ => b"250 ok\r\n",
                        }
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, taken)
}

#[tokio::test]
async fn a_throttling_relay_slows_sending_down_without_losing_a_message() {
    let (port, taken) = throttling_relay(2).await;
    let mailer = Mailer::new(
        &format!("smtp://127.0.0.1:{port}"),
        "Vinyles & Cie <bonjour@vinyles.example>",
    )
    .unwrap();
    let app = TestApp::spawn_with(Options {
        mailer: Some(mailer),
        ..Options::default()
    })
    .await;
    let start: Timestamp = "2026-09-01T10:00:00Z".parse().unwrap();
    app.clock.set(start);
    app.customer(
        "nina",
        json!({"email": "nina@example.org", "favorite_artists": ["Air"]}),
        true,
    )
    .await;
    app.indexed().await;
    let id = app
        .campaign(json!({
            "name": "Réédition", "purpose": "marketing_email", "channel": "email",
            "trigger": {"happening": {"kind": "release", "field": "favorite_artists"}},
            "steps": [{"template": {"subject": {"fr": "Réédition"}, "body": {"fr": "Le vinyle est de retour."}}}],
        }))
        .await;
    app.call(
        reqwest::Method::POST,
        "/api/v1/happenings",
        Some(json!({"kind": "release", "about": "Air", "name": "Moon Safari"})),
    )
    .await;
    // Refused, then refused again a minute later, then taken two minutes after that.
    for minutes in [0, 1, 2, 3] {
        app.clock.set(start + SignedDuration::from_mins(minutes));
        app.tick().await;
    }
    let log: Vec<(String, Option<String>, Value)> = app
        .sends(id)
        .await
        .iter()
        .map(|s| {
            (
                s["outcome"].as_str().unwrap().to_owned(),
                s["reason"].as_str().map(str::to_owned),
                s["at"].clone(),
            )
        })
        .collect();
    let outcomes: Vec<&str> = log.iter().map(|(o, _, _)| o.as_str()).collect();
    assert_eq!(outcomes, ["failed", "failed", "sent"], "{log:#?}");
    assert_eq!(log[0].1.as_deref(), Some("provider_unavailable"));
    assert_eq!(
        [&log[0].2, &log[1].2, &log[2].2],
        [
            &json!("2026-09-01T10:00:00Z"),
            &json!("2026-09-01T10:01:00Z"),
            &json!("2026-09-01T10:03:00Z")
        ],
        "waits one minute, then two"
    );
    assert_eq!(
        taken.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "delivered once, in the end"
    );
}

/// A channel's far end for the conformance suite: what it received, as text.
type Received = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// An HTTP endpoint (SMS provider, webhook) that answers 503 to the first `refusals` posts,
/// then takes them.
async fn http_receiver(refusals: usize) -> (String, Received) {
    let refused = std::sync::atomic::AtomicUsize::new(0);
    receiver(move || refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < refusals).await
}

/// An HTTP endpoint that answers 503 to a post when `refuses()` says so, and keeps the others.
async fn receiver(refuses: impl Fn() -> bool + Send + Sync + 'static) -> (String, Received) {
    use axum::routing::post;
    let received: Received = Default::default();
    let refuses = std::sync::Arc::new(refuses);
    let store = received.clone();
    let app = axum::Router::new().route(
        "/in",
        post(move |body: String| {
            let (store, refuses) = (store.clone(), refuses.clone());
            async move {
                if refuses() {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                store.lock().unwrap().push(body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/in", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// One conformance suite for every channel with a far end: the person who agreed gets exactly
/// one message, personalised; the one who did not is skipped with the reason; a far end that
/// refuses for a while slows sending down (retried a minute later) without losing or doubling
/// the message.
async fn channel_conforms(channel: &str) {
    let (url, received) = http_receiver(1).await;
    let (relay_port, relayed) = throttling_relay(1).await;
    let mut options = Options::default();
    let mut campaign = json!({
        "name": format!("Conformité {channel}"), "channel": channel,
        "trigger": {"happening": {"kind": "tour", "field": "favorite_artists"}},
        "steps": [{"template": {"subject": {"fr": "Tournée"}, "body": {"fr": "Vos artistes en tournée : {{ traits.favorite_artists|join(', ') }}."}}}],
    });
    let purpose = match channel {
        "email" => {
            options.mailer = Some(
                Mailer::new(
                    &format!("smtp://127.0.0.1:{relay_port}"),
                    "Vinyles & Cie <bonjour@vinyles.example>",
                )
                .unwrap(),
            );
            "marketing_email"
        }
        "sms" => {
            options.sms = Some(confiance_server::mail::SmsProvider::new(&url, None).unwrap());
            "marketing_sms"
        }
        _ => {
            campaign["webhook_url"] = json!(url);
            "marketing_email"
        }
    };
    campaign["purpose"] = json!(purpose);
    let app = TestApp::spawn_with(options).await;
    let start: Timestamp = "2026-09-01T10:00:00Z".parse().unwrap();
    app.clock.set(start);
    for (id, agreed) in [("olga", true), ("paul", false)] {
        app.customer(
            id,
            json!({"email": format!("{id}@example.org"), "phone": "+33612345678", "first_name": id, "favorite_artists": ["Air"]}),
            false,
        )
        .await;
        if agreed {
            let (status, _) = app
                .call(
                    reqwest::Method::POST,
                    "/api/v1/consents",
                    Some(json!({"subject": {"type": "user_id", "value": id}, "purpose": purpose, "status": "granted"})),
                )
                .await;
            assert!(status < 300);
        }
    }
    app.indexed().await;
    let id = app.campaign(campaign).await;
    app.call(
        reqwest::Method::POST,
        "/api/v1/happenings",
        Some(json!({"kind": "tour", "about": "Air"})),
    )
    .await;
    for minutes in [0, 1, 2] {
        app.clock.set(start + SignedDuration::from_mins(minutes));
        app.tick().await;
    }
    let log: Vec<(String, Option<String>)> = app
        .sends(id)
        .await
        .iter()
        .map(|s| {
            (
                s["outcome"].as_str().unwrap().to_owned(),
                s["reason"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let entry = |o: &str, r: Option<&str>| (o.to_owned(), r.map(str::to_owned));
    assert_eq!(
        log,
        [
            entry("failed", Some("provider_unavailable")),
            entry("skipped", Some("no_legal_basis")),
            entry("sent", None)
        ],
        "{channel}"
    );
    let delivered: Vec<String> = if channel == "email" {
        assert_eq!(relayed.load(std::sync::atomic::Ordering::SeqCst), 1, "{channel}");
        vec!["Vos artistes en tournée : Air.".into()]
    } else {
        received.lock().unwrap().clone()
    };
    assert_eq!(delivered.len(), 1, "{channel}: {delivered:?}");
    assert!(
        delivered[0].contains("Vos artistes en tournée : Air."),
        "{channel}: {delivered:?}"
    );
}

#[tokio::test]
async fn every_channel_conforms() {
    for channel in ["email", "sms", "webhook"] {
        channel_conforms(channel).await;
    }
}

#[tokio::test]
async fn opens_and_clicks_are_counted_only_for_people_who_agreed_to_measurement() {
    let smtp = SmtpSink::start();
    let app = shop(&smtp).await;
    app.clock.set("2026-10-01T10:00:00Z".parse().unwrap());
    for id in ["quentin", "rose"] {
        app.customer(
            id,
            json!({"email": format!("{id}@example.org"), "favorite_artists": ["Air"]}),
            true,
        )
        .await;
    }
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            "/api/v1/consents",
            Some(json!({"subject": {"type": "user_id", "value": "quentin"}, "purpose": "analytics", "status": "granted"})),
        )
        .await;
    assert!(status < 300);
    app.indexed().await;
    let id = app
        .campaign(json!({
            "name": "Précommande", "purpose": "marketing_email", "channel": "email",
            "trigger": {"happening": {"kind": "release", "field": "favorite_artists"}},
            "steps": [{"template": {"subject": {"fr": "Précommande"},
                                    "body": {"fr": "Réservez-le : https://vinyles.example/air?from=mail.\nVos choix : {{ links.preferences }}"}}}],
        }))
        .await;
    app.call(
        reqwest::Method::POST,
        "/api/v1/happenings",
        Some(json!({"kind": "release", "about": "Air"})),
    )
    .await;
    app.tick().await;
    let mails: Vec<String> = smtp.messages().iter().map(|m| decoded(m)).collect();
    let body_of = |who: &str| {
        mails
            .iter()
            .find(|m| m.contains(&format!("To: {who}@example.org")))
            .unwrap()
            .clone()
    };
    let rose = body_of("rose");
    assert!(
        rose.contains("Réservez-le : https://vinyles.example/air?from=mail."),
        "{rose}"
    );
    let quentin = body_of("quentin");
    assert!(!quentin.contains("https://vinyles.example"), "{quentin}");
    assert!(
        quentin.contains("http://shop.test/preferences?token="),
        "own links stay as they are"
    );
    let tracked = quentin
        .split_whitespace()
        .find(|w| w.starts_with("http://shop.test/c/"))
        .unwrap()
        .trim_end_matches('.')
        .replace("http://shop.test", &app.base);
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirect.get(&tracked).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "https://vinyles.example/air?from=mail");
    let forged = no_redirect.get(format!("{tracked}x")).send().await.unwrap();
    assert_eq!(forged.status(), 404);
    // Quentin's mail also has an HTML part whose one-pixel image counts the open; Rose's is text.
    assert!(!rose.contains("text/html"), "{rose}");
    let pixel = quentin
        .split("src=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("{quentin}"))
        .replace("http://shop.test", &app.base);
    assert!(pixel.contains("/o/"), "{pixel}");
    for _ in 0..2 {
        let image = no_redirect.get(&pixel).send().await.unwrap();
        assert_eq!(image.headers()["content-type"], "image/gif");
    }
    let (_, figures) = app
        .call(reqwest::Method::GET, &format!("/api/v1/campaigns/{id}"), None)
        .await;
    assert_eq!(
        (
            figures["figures"]["clicks"].as_i64(),
            figures["figures"]["opened"].as_i64()
        ),
        (Some(1), Some(1)),
        "one click; two loads of the image are one person who opened: {figures}"
    );
}

#[tokio::test]
async fn soft_opt_in_reaches_customers_who_never_refused_only_when_enabled() {
    let smtp = SmtpSink::start();
    let app = shop(&smtp).await;
    app.clock.set("2026-11-02T10:00:00Z".parse().unwrap());
    for id in ["sam", "tess", "ugo"] {
        app.customer(
            id,
            json!({"email": format!("{id}@example.org"), "favorite_artists": ["Air"]}),
            false,
        )
        .await;
    }
    // Sam and Ugo are customers; Ugo said no to offers by email; Tess never bought anything.
    for user in ["sam", "ugo"] {
        let (status, _) = app
            .post(
                "/v1/track",
                &json!({"userId": user, "event": "Order Completed", "properties": {"order_id": format!("o-{user}"), "total": 30.0}}),
            )
            .await;
        assert_eq!(status, 200);
    }
    app.call(
        reqwest::Method::POST,
        "/api/v1/consents",
        Some(json!({"subject": {"type": "user_id", "value": "ugo"}, "purpose": "marketing_email", "status": "denied"})),
    )
    .await;
    app.indexed().await;
    let campaign = |name: &str, soft: bool| {
        json!({"name": name, "purpose": "marketing_email", "channel": "email", "soft_opt_in": soft,
               "trigger": {"happening": {"kind": "release", "field": "favorite_artists"}},
               "steps": [{"template": {"subject": {"fr": "Nouveauté"}, "body": {"fr": "Un disque proche de vos achats."}}}]})
    };
    let strict = app.campaign(campaign("Sans soft opt-in", false)).await;
    let soft = app.campaign(campaign("Avec soft opt-in", true)).await;
    app.call(
        reqwest::Method::POST,
        "/api/v1/happenings",
        Some(json!({"kind": "release", "about": "Air"})),
    )
    .await;
    app.tick().await;
    let outcomes = |sends: Vec<Value>| -> Vec<String> {
        sends
            .iter()
            .map(|s| {
                format!(
                    "{}:{}",
                    s["outcome"].as_str().unwrap(),
                    s["reason"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    assert_eq!(
        outcomes(app.sends(strict).await),
        [
            "skipped:no_legal_basis",
            "skipped:no_legal_basis",
            "skipped:no_legal_basis"
        ],
        "without soft opt-in, nobody who did not opt in"
    );
    let mut with_soft = outcomes(app.sends(soft).await);
    with_soft.sort();
    assert_eq!(
        with_soft,
        ["sent:", "skipped:no_legal_basis", "skipped:no_legal_basis"],
        "the customer who never refused; not the prospect, not the one who said no"
    );
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("To: sam@example.org"));
}

#[tokio::test]
async fn a_delivery_brings_the_satisfaction_questionnaire_three_days_later() {
    let smtp = SmtpSink::start();
    let app = shop(&smtp).await;
    let start: Timestamp = "2026-03-10T09:00:00Z".parse().unwrap();
    app.clock.set(start);
    for id in ["vic", "wes"] {
        app.customer(
            id,
            json!({"email": format!("{id}@example.org"), "first_name": id}),
            false,
        )
        .await;
    }
    app.indexed().await;
    let id = app
        .campaign(json!({
            "name": "Votre avis", "purpose": "service", "channel": "email",
            "trigger": {"event": {"event": "Order Delivered",
                                  "where": [{"field": "carrier", "cmp": {"op": "=", "value": "colissimo"}}]}},
            "steps": [{"delay_hours": 72, "template": {"subject": {"fr": "Votre commande est bien arrivée ?"},
                                                       "body": {"fr": "Bonjour {{ traits.first_name }}, dites-nous tout."}}}],
        }))
        .await;
    // Two deliveries; only Colissimo's count.
    for (user, carrier) in [("vic", "Colissimo"), ("wes", "coursier")] {
        let (status, _) = app
            .post(
                "/v1/track",
                &json!({"userId": user, "event": "Order Delivered", "timestamp": "2026-03-10T09:00:00Z",
                        "properties": {"order_id": format!("o-{user}"), "carrier": carrier}}),
            )
            .await;
        assert_eq!(status, 200);
    }
    app.resolved().await;
    app.tick().await;
    app.clock.set(start + SignedDuration::from_hours(71));
    app.tick().await;
    assert!(smtp.messages().is_empty(), "not before three days");
    app.clock.set(start + SignedDuration::from_hours(72));
    app.tick().await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("To: vic@example.org"), "{}", mails[0]);
    let sends = app.sends(id).await;
    assert_eq!(
        sends.len(),
        1,
        "the courier's delivery is not one the campaign waits for: {sends:#?}"
    );
    assert_eq!(sends[0]["at"], "2026-03-13T09:00:00Z");
}

impl TestApp {
    /// Sends the data of the customers who like Air, and agreed to offers, to a partner's
    /// webhook at `url`: a campaign on Air's tour, run once.
    async fn send_to_partner(&self, url: &str) {
        self.resolved().await;
        self.indexed().await;
        self.campaign(json!({
            "name": "Partenaire billetterie", "channel": "webhook", "webhook_url": url, "purpose": "marketing_email",
            "trigger": {"happening": {"kind": "tour", "field": "favorite_artists"}},
            "steps": [{"template": {"subject": {"fr": "Tournée"}, "body": {"fr": "{{ traits.first_name }} : Air en tournée."}}}],
        }))
        .await;
        self.call(
            reqwest::Method::POST,
            "/api/v1/happenings",
            Some(json!({"kind": "tour", "about": "Air"})),
        )
        .await;
        self.tick().await;
    }
}

/// Carries out a request for `email` entered by staff, and returns it once done.
async fn carried_out(app: &TestApp, right: &str, email: &str, details: Value) -> Value {
    let (status, request) = app
        .call(
            reqwest::Method::POST,
            "/api/v1/requests",
            Some(json!({"type": right, "subject": {"type": "email", "value": email}, "details": details})),
        )
        .await;
    assert_eq!(status, 201, "{request}");
    let (status, done) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/requests/{}/process", request["id"]),
            None,
        )
        .await;
    assert_eq!(status, 200, "{done}");
    done
}

#[tokio::test]
async fn recipients_of_a_persons_data_are_told_of_its_rectification_and_erasure() {
    let (url, received) = http_receiver(0).await;
    let app = TestApp::spawn().await;
    app.clock.set("2026-09-01T10:00:00Z".parse().unwrap());
    for id in ["sacha", "tess"] {
        app.customer(
            id,
            json!({"email": format!("{id}@example.org"), "first_name": id, "favorite_artists": ["Air"]}),
            id == "sacha",
        )
        .await;
    }
    app.send_to_partner(&url).await;
    assert_eq!(
        received.lock().unwrap().len(),
        1,
        "only Sacha's data went to the partner"
    );

    // Tess's data never went there: her rectification tells no one.
    let done = carried_out(
        &app,
        "rectification",
        "tess@example.org",
        json!({"traits": {"first_name": "Tessa"}}),
    )
    .await;
    assert!(!done["steps"].to_string().contains("recipient"), "{done}");
    assert_eq!(received.lock().unwrap().len(), 1);

    let done = carried_out(
        &app,
        "rectification",
        "sacha@example.org",
        json!({"traits": {"first_name": "Sasha"}}),
    )
    .await;
    assert!(
        done["steps"]
            .to_string()
            .contains("told 1 recipient(s) (Art. 19): 127.0.0.1 (HTTP 200)"),
        "{done}"
    );
    let done = carried_out(&app, "erasure", "sacha@example.org", Value::Null).await;
    assert!(done["steps"].to_string().contains("told 1 recipient(s)"), "{done}");
    let notices: Vec<Value> = received.lock().unwrap()[1..]
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(notices.len(), 2);
    assert_eq!(notices[0]["notice"], "rectification");
    assert_eq!(notices[0]["traits"], json!({"first_name": "Sasha"}));
    assert_eq!(notices[1]["notice"], "erasure");
    assert_eq!(notices[0]["profile_id"], notices[1]["profile_id"]);
    assert!(notices[1].get("traits").is_none(), "an erasure notice carries no data");
    let audit = app.store.audit_log(0, 10_000).await.unwrap();
    let told: Vec<_> = audit.iter().filter(|e| e.action == "recipients.notified").collect();
    assert_eq!(told.len(), 2);
    assert!(
        !told[1].details.to_string().contains(&url),
        "the audit log names the host, not a URL that may hold a token"
    );
}

/// A receiver that answers 503 while `down` is set.
async fn flaky_receiver() -> (String, Received, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let switch = down.clone();
    let (url, received) = receiver(move || switch.load(std::sync::atomic::Ordering::SeqCst)).await;
    (url, received, down)
}

#[tokio::test]
async fn a_recipient_that_is_down_is_told_once_it_is_back_and_failures_are_listed() {
    use std::sync::atomic::Ordering::SeqCst;
    let (url, received, down) = flaky_receiver().await;
    let app = TestApp::spawn().await;
    let start: jiff::Timestamp = "2026-09-01T10:00:00Z".parse().unwrap();
    app.clock.set(start);
    app.customer(
        "sacha",
        json!({"email": "sacha@example.org", "first_name": "Sacha", "favorite_artists": ["Air"]}),
        true,
    )
    .await;
    app.send_to_partner(&url).await;
    assert_eq!(received.lock().unwrap().len(), 1, "the partner got Sacha's data");

    // The partner is down when Sacha corrects her name: the request is done, the notice waits.
    down.store(true, SeqCst);
    let done = carried_out(
        &app,
        "rectification",
        "sacha@example.org",
        json!({"traits": {"first_name": "Sasha"}}),
    )
    .await;
    let request = done["id"].as_i64().unwrap();
    assert_eq!(done["status"], "done");
    assert!(
        done["steps"]
            .to_string()
            .contains("127.0.0.1 (refused: HTTP 503; tried again from 2026-09-01T10:01:00Z)"),
        "{done}"
    );
    let notices = |query: String| {
        let app = &app;
        async move {
            let (status, body) = app
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/recipient-notices?{query}"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["notices"].as_array().unwrap().clone()
        }
    };
    let (status, error) = app
        .call(reqwest::Method::GET, "/api/v1/recipient-notices?status=lost", None)
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("invalid_query")),
        "{error}"
    );
    assert!(error["message"].as_str().unwrap().contains("lost"), "{error}");
    let (status, error) = app
        .call(reqwest::Method::POST, "/api/v1/requests/999/notices/retry", None)
        .await;
    assert_eq!(status, 404, "{error}");
    let pending = notices(format!("request={request}")).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (&pending[0]["status"], &pending[0]["attempts"], &pending[0]["host"]),
        (&json!("pending"), &json!(1), &json!("127.0.0.1"))
    );
    assert!(!pending[0].to_string().contains(&url), "listed by host, not by URL");
    assert!(
        !pending[0].to_string().contains("Sasha"),
        "a listing does not show what a notice carries"
    );

    // Not before its time; then tried again, later each time, until the partner is back.
    app.clock.set(start + SignedDuration::from_secs(59));
    assert_eq!(app.state.retry_due_notices().await.unwrap(), 0);
    app.clock.set(start + SignedDuration::from_mins(1));
    assert_eq!(app.state.retry_due_notices().await.unwrap(), 1);
    let (_, shown) = app
        .call(reqwest::Method::GET, &format!("/api/v1/requests/{request}"), None)
        .await;
    assert_eq!(shown["recipient_notices"][0]["attempts"], 2);
    assert_eq!(shown["recipient_notices"][0]["next_at"], "2026-09-01T10:06:00Z");
    down.store(false, SeqCst);
    app.clock.set(start + SignedDuration::from_mins(6));
    assert_eq!(app.state.retry_due_notices().await.unwrap(), 1);
    assert_eq!(app.state.retry_due_notices().await.unwrap(), 0, "sent once");
    let told: Value = serde_json::from_str(&received.lock().unwrap()[1]).unwrap();
    assert_eq!(told["notice"], "rectification");
    assert_eq!(told["traits"], json!({"first_name": "Sasha"}));
    assert_eq!(told["notice_id"], pending[0]["id"], "the recipient can ignore a repeat");
    assert_eq!(notices(format!("request={request}")).await[0]["status"], "sent");
    let audit = app.store.audit_log(0, 10_000).await.unwrap();
    let tries: Vec<_> = audit.iter().filter(|e| e.action == "recipients.notified").collect();
    assert_eq!(tries.len(), 3, "every try is audited");
    assert_eq!(tries[2].details["recipients"][0]["outcome"], "HTTP 200");

    // A partner that stays down: the attempts run out, staff see it and queue it again.
    down.store(true, SeqCst);
    let done = carried_out(&app, "restriction", "sacha@example.org", Value::Null).await;
    let restriction = done["id"].as_i64().unwrap();
    let mut at = start + SignedDuration::from_mins(6);
    for _ in 1..confiance_core::privacy::requests::NOTICE_ATTEMPTS {
        at += SignedDuration::from_hours(12);
        app.clock.set(at);
        assert_eq!(app.state.retry_due_notices().await.unwrap(), 1);
    }
    at += SignedDuration::from_hours(12);
    app.clock.set(at);
    assert_eq!(app.state.retry_due_notices().await.unwrap(), 0, "given up");
    let failed = notices("status=failed".into()).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["request_id"], restriction);
    assert_eq!(failed[0]["attempts"], 10);
    assert_eq!(failed[0]["outcome"], "refused: HTTP 503");
    down.store(false, SeqCst);
    let (status, retried) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/requests/{restriction}/notices/retry"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["queued"], 1);
    assert_eq!(retried["notices"][0]["status"], "sent");
    assert!(notices("status=failed".into()).await.is_empty());
    assert_eq!(received.lock().unwrap().len(), 3);

    // Her access archive says whom her requests told, and how it went.
    let access = carried_out(&app, "access", "sacha@example.org", Value::Null).await;
    let (_, archive) = app
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/requests/{}/archive", access["id"]),
            None,
        )
        .await;
    let told: Vec<(&str, &str)> = archive["recipient_notices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["notice"].as_str().unwrap(), n["status"].as_str().unwrap()))
        .collect();
    assert_eq!(told, [("rectification", "sent"), ("restriction", "sent")], "{archive}");

    // Erased while a correction waits: the correction is never sent, the erasure is.
    down.store(true, SeqCst);
    let done = carried_out(
        &app,
        "rectification",
        "sacha@example.org",
        json!({"traits": {"first_name": "Sachinka"}}),
    )
    .await;
    let correction = done["id"].as_i64().unwrap();
    let done = carried_out(&app, "erasure", "sacha@example.org", Value::Null).await;
    let erasure = done["id"].as_i64().unwrap();
    let cancelled = notices(format!("request={correction}")).await;
    assert_eq!(cancelled[0]["status"], "cancelled");
    assert_eq!(cancelled[0]["outcome"], confiance_store::SUPERSEDED);
    down.store(false, SeqCst);
    app.clock.set(at + SignedDuration::from_hours(1));
    assert_eq!(app.state.retry_due_notices().await.unwrap(), 1);
    let bodies = received.lock().unwrap().clone();
    assert_eq!(bodies.len(), 4);
    let last: Value = serde_json::from_str(&bodies[3]).unwrap();
    assert_eq!(
        (last["notice"].as_str(), last["request_id"].as_i64()),
        (Some("erasure"), Some(erasure))
    );
    assert!(!bodies.concat().contains("Sachinka"));
    assert_eq!(notices(format!("request={erasure}")).await[0]["status"], "sent");
    let (_, shown) = app
        .call(reqwest::Method::GET, &format!("/api/v1/requests/{correction}"), None)
        .await;
    assert_eq!(shown["details"]["traits"]["first_name"], "erased", "{shown}");
    let db = std::fs::read(app.data_dir().join("confiance.db")).unwrap();
    assert!(
        !db.windows(8).any(|w| w == b"Sachinka"),
        "neither the request nor the notice keeps the corrected name"
    );
}

#[tokio::test]
async fn a_person_erased_by_the_retention_rules_is_erased_at_their_recipients_too() {
    let (url, received, down) = flaky_receiver().await;
    let app = TestApp::spawn().await;
    app.clock.set("2026-09-01T10:00:00Z".parse().unwrap());
    app.customer(
        "ugo",
        json!({"email": "ugo@example.org", "first_name": "Ugo", "favorite_artists": ["Air"]}),
        true,
    )
    .await;
    app.send_to_partner(&url).await;
    assert_eq!(received.lock().unwrap().len(), 1, "the partner got Ugo's data");

    // Three years without a word from him: the retention rules erase him, and tell the partner.
    app.clock.set("2029-09-02T10:00:00Z".parse().unwrap());
    let (status, report) = app.call(reqwest::Method::POST, "/api/v1/retention/run", None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["people"]["prospects_erased"], 1, "{report}");
    assert_eq!(report["recipients_told"], 1, "{report}");
    assert_eq!(
        received.lock().unwrap().len(),
        1,
        "queued with the erasure, sent by the worker"
    );
    // The partner is down for days: the attempts run out; staff queue that notice again.
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut at: jiff::Timestamp = "2029-09-02T10:00:00Z".parse().unwrap();
    for _ in 0..confiance_core::privacy::requests::NOTICE_ATTEMPTS {
        assert_eq!(app.state.retry_due_notices().await.unwrap(), 1);
        at += SignedDuration::from_hours(12);
        app.clock.set(at);
    }
    let (_, failed) = app
        .call(reqwest::Method::GET, "/api/v1/recipient-notices?status=failed", None)
        .await;
    let id = failed["notices"][0]["id"].as_i64().expect("failed");
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, retried) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/recipient-notices/{id}/retry"),
            None,
        )
        .await;
    assert_eq!((status, &retried["status"]), (200, &json!("sent")), "{retried}");
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/recipient-notices/{id}/retry"),
            None,
        )
        .await;
    assert_eq!(status, 404, "only a failed notice is queued again");
    let bodies = received.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let told: Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(
        (&told["notice"], &told["request_id"], &told["reason"]),
        (&json!("erasure"), &Value::Null, &json!("retention period ended"))
    );
    assert!(
        !bodies[1].contains("Ugo") && !bodies[1].contains("ugo@"),
        "an erasure notice carries no data"
    );
    let (_, listed) = app
        .call(reqwest::Method::GET, "/api/v1/recipient-notices?status=sent", None)
        .await;
    assert_eq!(listed["notices"][0]["request_id"], Value::Null, "{listed}");
    assert_eq!(listed["notices"][0]["notice"], "erasure");
}

/// An SMTP server that refuses every recipient, quoting the address as real servers do.
async fn refusing_smtp() -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 refusing.test ESMTP\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    let answer = match verb.as_str() {
                        "EHLO" | "HELO" => "250 refusing.test".to_owned(),
                        "RCPT" => {
                            // As some servers do, in capitals.
                            let to = line.split(['<', '>']).nth(1).unwrap_or_default().to_uppercase();
                            format!("550 5.1.1 <{to}>: Recipient address rejected: User unknown")
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => "250 OK".to_owned(),
                    };
                    if write.write_all(format!("{answer}\r\n").as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_refusal_quoting_the_address_is_recorded_without_it() {
    let port = refusing_smtp().await;
    let mailer = Mailer::new(
        &format!("smtp://127.0.0.1:{port}"),
        "Vinyles & Cie <bonjour@vinyles.example>",
    )
    .unwrap();
    let app = TestApp::spawn_with(Options {
        mailer: Some(mailer),
        public_url: Some("http://shop.test".into()),
        ..Options::default()
    })
    .await;
    app.clock.set("2026-11-02T10:00:00Z".parse().unwrap());
    app.customer(
        "vera",
        json!({"email": "vera.gone@example.org", "favorite_artists": ["Air"]}),
        true,
    )
    .await;
    app.indexed().await;
    let id = app
        .campaign(
            json!({"name": "Sortie", "purpose": "marketing_email", "channel": "email",
               "trigger": {"happening": {"kind": "release", "field": "favorite_artists"}},
               "steps": [{"template": {"subject": {"fr": "Nouveauté"}, "body": {"fr": "Un disque pour vous."}}}]}),
        )
        .await;
    app.call(
        reqwest::Method::POST,
        "/api/v1/happenings",
        Some(json!({"kind": "release", "about": "Air"})),
    )
    .await;
    app.tick().await;
    let sends = app.sends(id).await;
    assert_eq!(sends.len(), 1, "{sends:#?}");
    assert_eq!(sends[0]["outcome"], "failed", "{sends:#?}");
    let error = sends[0]["detail"]["error"].as_str().unwrap();
    assert!(error.contains("Recipient address rejected"), "{error}");
    assert!(error.contains("<[recipient]>"), "{error}");
    assert!(!error.to_lowercase().contains("vera.gone@example.org"), "{error}");
}
