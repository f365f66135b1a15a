//! KPIs and the journey map as an analyst reads them: figures counted by hand over five people
//! who visit, answer questionnaires and order through the web, the shop's back end and a till;
//! the same figures filtered by period, source, channel and segment; and charts that are SVG.
//!
//! The people (2026, UTC; 03-02 is a Monday):
//!
//! | user | through | what |
//! | ---- | ------- | ---- |
//! | u1 | web, backend, forms | 03-02 page and order 40; 03-05 survey sent and answered; 03-20 order 60 |
//! | u2 | web, forms | 03-03 page; tastes pop-in shown, not answered |
//! | u3 | tills, forms | 04-10 order 25 in store; 04-12 survey sent, not answered |
//! | u4 | web, forms, backend | 03-10 page; pop-in shown and answered; 03-11 order 35 |
//! | u5 | web, forms | 04-02 page; a tastes form answered unprompted (phase only) |

use crate::support::{ADMIN_TOKEN, TestApp, read};
use confiance_core::source::SourceKind;
use serde_json::{Value, json};

struct Shop {
    app: TestApp,
    backend: String,
    forms: String,
    tills: String,
}

impl Shop {
    async fn open() -> Shop {
        let app = TestApp::spawn().await;
        app.clock.set("2026-06-01T10:00:00Z".parse().unwrap());
        let backend = app.add_source("backend", SourceKind::Server).await;
        let forms = app.add_source("forms", SourceKind::Form).await;
        let tills = app.add_source("tills", SourceKind::Store).await;
        Shop {
            app,
            backend,
            forms,
            tills,
        }
    }

    /// Sends a message with a source's key (`None`: the web tag).
    async fn send(&self, key: Option<&str>, path: &str, body: Value) {
        let (status, reply) = match key {
            Some(k) => self.app.post_as(k, path, &body).await,
            None => self.app.post(path, &body).await,
        };
        assert_eq!(status, 200, "{path} {body}: {reply}");
    }

    /// Cookie choices on the site, then a page view.
    async fn visit(&self, user: &str, personalised: bool, when: &str) {
        let consent = json!({"consent": {"categoryPreferences": {"Analytics": true, "Personalization": personalised}}});
        self.send(None, "/v1/identify", json!({"userId": user, "context": consent}))
            .await;
        self.send(
            None,
            "/v1/page",
            json!({"userId": user, "name": "Accueil", "properties": {"path": "/"}, "timestamp": when}),
        )
        .await;
    }

    async fn order(&self, key: &str, user: &str, total: f64, when: &str) {
        let properties = json!({"order_id": format!("{user}-{total}"), "total": total, "currency": "EUR"});
        self.send(
            Some(key),
            "/v1/track",
            json!({"userId": user, "event": "Order Completed", "properties": properties, "timestamp": when}),
        )
        .await;
    }

    async fn questionnaire(&self, event: &str, user: &str, properties: Value, when: &str) {
        self.send(
            Some(&self.forms),
            "/v1/track",
            json!({"userId": user, "event": event, "properties": properties, "timestamp": when}),
        )
        .await;
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .app
            .http
            .get(self.app.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    async fn kpis(&self, query: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/kpis?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        body
    }

    /// The journey's rows: (touchpoint, events, profiles, converted, [offered, answered]) of the
    /// touchpoints where something happened or questionnaires apply, per phase.
    async fn journey(&self, query: &str) -> Vec<(String, Vec<Value>)> {
        let (status, body) = self.get(&format!("/api/v1/journey?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        body["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let rows = p["touchpoints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|t| t["events"] != 0 || !t["response"].is_null())
                    .map(|t| {
                        json!([
                            t["touchpoint"],
                            t["events"],
                            t["profiles"],
                            t["converted"],
                            t["response"]["offered"],
                            t["response"]["answered"]
                        ])
                    })
                    .collect();
                (p["phase"].as_str().unwrap().to_owned(), rows)
            })
            .collect()
    }
}

/// The figures every filter is checked against: (visitors, converted, customers, repeat
/// customers, orders, revenue).
fn counts(k: &Value) -> Value {
    json!([
        k["visitors"],
        k["converted"],
        k["customers"],
        k["repeat_customers"],
        k["orders"],
        k["revenue"]
    ])
}

/// (touchpoint, offered, answered) of each questionnaire touchpoint listed.
fn asked(k: &Value) -> Value {
    k["responses"]["by_touchpoint"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!([r["touchpoint"], r["offered"], r["answered"]]))
        .collect()
}

async fn shop_with_five_people() -> Shop {
    let shop = Shop::open().await;
    let pre = json!({"questionnaire_id": "gouts", "phase": "discovery", "touchpoint": "pre_purchase_questionnaire"});
    let post = json!({"questionnaire_id": "satisfaction", "phase": "post_purchase", "touchpoint": "post_purchase_questionnaire"});
    let (backend, tills) = (shop.backend.clone(), shop.tills.clone());

    shop.visit("u1", true, "2026-03-02T10:00:00Z").await;
    shop.order(&backend, "u1", 40.0, "2026-03-02T10:30:00Z").await;
    shop.questionnaire("Questionnaire Sent", "u1", post.clone(), "2026-03-05T10:00:00Z")
        .await;
    let mut answer = post.clone();
    answer["satisfaction"] = json!(5);
    shop.questionnaire("Questionnaire Answered", "u1", answer, "2026-03-05T12:00:00Z")
        .await;
    shop.order(&backend, "u1", 60.0, "2026-03-20T09:00:00Z").await;

    shop.visit("u2", false, "2026-03-03T09:00:00Z").await;
    shop.questionnaire("Questionnaire Sent", "u2", pre.clone(), "2026-03-03T09:01:00Z")
        .await;

    shop.order(&tills, "u3", 25.0, "2026-04-10T15:00:00Z").await;
    shop.questionnaire("Questionnaire Sent", "u3", post, "2026-04-12T10:00:00Z")
        .await;

    shop.visit("u4", true, "2026-03-10T08:00:00Z").await;
    shop.questionnaire("Questionnaire Sent", "u4", pre.clone(), "2026-03-10T08:05:00Z")
        .await;
    let mut answer = pre;
    answer["favorite_style"] = json!("jazz");
    shop.questionnaire("Questionnaire Answered", "u4", answer, "2026-03-10T08:10:00Z")
        .await;
    shop.order(&backend, "u4", 35.0, "2026-03-11T18:00:00Z").await;

    shop.visit("u5", false, "2026-04-02T10:00:00Z").await;
    shop.questionnaire(
        "Questionnaire Answered",
        "u5",
        json!({"questionnaire_id": "gouts", "phase": "discovery"}),
        "2026-04-02T10:10:00Z",
    )
    .await;

    // u1 also signs up to the newsletter, agreeing to it there.
    let resp = shop
        .app
        .http
        .post(shop.app.url("/api/v1/consents"))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &json!({"subject": {"type": "user_id", "value": "u1"}, "purpose": "marketing_email",
                      "status": "granted", "source": "web", "touchpoint": "newsletter_signup"}),
        )
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert!(status < 300, "{body}");
    shop.send(
        None,
        "/v1/track",
        json!({"userId": "u1", "event": "Newsletter Subscribed", "properties": {"list": "hebdo"},
               "timestamp": "2026-03-02T10:40:00Z"}),
    )
    .await;
    shop.app.indexed().await;
    shop
}

/// The texts of an SVG's `<text>` elements.
fn texts(svg: &str) -> Vec<&str> {
    svg.split("</text>")
        .filter_map(|part| part.rsplit_once("<text").map(|(_, element)| element))
        .filter_map(|element| element.split_once('>').map(|(_, text)| text.trim()))
        .collect()
}

#[tokio::test]
async fn kpis_journey_and_charts_on_a_hand_counted_shop() {
    let shop = shop_with_five_people().await;

    // Everything: u1 is also a newsletter subscriber (an event at newsletter_signup).
    let all = shop.kpis("").await;
    assert_eq!(counts(&all), json!([5, 3, 3, 1, 4, 160.0]));
    assert_eq!(all["conversion_rate"], 0.6);
    assert_eq!(all["repurchase_rate"], 1.0 / 3.0);
    assert_eq!(all["average_basket"], 40.0);
    assert_eq!(
        asked(&all),
        json!([
            ["pre_purchase_questionnaire", 3, 2],
            ["post_purchase_questionnaire", 2, 1]
        ]),
        "an unprompted answer counts as offered once"
    );
    let phases: Vec<Value> = all["responses"]["by_phase"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json!([p["phase"], p["rate"]]))
        .collect();
    assert_eq!(
        phases,
        [
            json!(["discovery", 2.0 / 3.0]),
            json!(["purchase", null]),
            json!(["post_purchase", 0.5])
        ],
        "people answer before buying more than after: rates by phase say when"
    );
    let months: Vec<Value> = all["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json!([p["start"], p["visitors"], p["converted"], p["orders"], p["revenue"]]))
        .collect();
    assert_eq!(
        months,
        [
            json!(["2026-03-01T00:00:00Z", 3, 2, 3, 135.0]),
            json!(["2026-04-01T00:00:00Z", 2, 1, 1, 25.0])
        ]
    );
    assert_eq!(all["bucket"], "month");

    // Consent decisions by touchpoint: the banner's on the site, the newsletter's where it
    // was signed up to.
    let consent = &all["consent"]["by_touchpoint"];
    let rows: Vec<Value> = consent
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            json!([
                t["touchpoint"],
                t["channel"],
                t["all"]["granted"],
                t["all"]["total"],
                t["all"]["granted_rate"]
            ])
        })
        .collect();
    assert_eq!(
        rows,
        [
            json!(["newsletter_signup", "web", 1, 1, 1.0]),
            json!(["site_visit", "web", 6, 8, 0.75])
        ]
    );
    let site: Vec<Value> = consent[1]["purposes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            json!([
                p["purpose"],
                p["granted"],
                p["denied"],
                p["granted_rate"],
                p["denied_rate"]
            ])
        })
        .collect();
    assert_eq!(
        site,
        [
            json!(["analytics", 4, 0, 1.0, 0.0]),
            json!(["personalisation", 2, 2, 0.5, 0.5])
        ]
    );

    // A period, in dates (both days included), by week: empty weeks are there, with no rate.
    let march = shop.kpis("from=2026-03-09&to=2026-03-31&bucket=week").await;
    assert_eq!(counts(&march), json!([2, 2, 2, 0, 2, 95.0]));
    assert_eq!(march["average_basket"], 47.5);
    let weeks: Vec<Value> = march["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json!([p["start"], p["visitors"], p["orders"], p["conversion_rate"]]))
        .collect();
    assert_eq!(
        weeks,
        [
            json!(["2026-03-09T00:00:00Z", 1, 1, 1.0]),
            json!(["2026-03-16T00:00:00Z", 1, 1, 1.0]),
            json!(["2026-03-23T00:00:00Z", 0, 0, null]),
            json!(["2026-03-30T00:00:00Z", 0, 0, null])
        ]
    );
    assert_eq!(march["filters"]["to"], "2026-04-01T00:00:00Z");

    // By source: web visitors convert through orders the back end sends.
    let web = shop.kpis("source=web").await;
    assert_eq!(counts(&web), json!([4, 2, 0, 0, 0, 0.0]));
    assert_eq!(web["conversion_rate"], 0.5);
    assert_eq!(web["average_basket"], Value::Null);
    let backend = shop.kpis("source=backend").await;
    assert_eq!(counts(&backend), json!([2, 2, 2, 1, 3, 135.0]));
    assert_eq!(backend["consent"]["by_touchpoint"], json!([]));

    // By channel: the till's order is the store's; the survey is e-mailed.
    let store = shop.kpis("channel=store").await;
    assert_eq!(counts(&store), json!([1, 1, 1, 0, 1, 25.0]));
    let email = shop.kpis("channel=email").await;
    assert_eq!(asked(&email), json!([["post_purchase_questionnaire", 2, 1]]));

    // By segment: its members now, with a legal basis for its purpose (u3, who ordered, never
    // agreed to personalisation).
    let resp = shop
        .app
        .http
        .post(shop.app.url("/api/v1/segments"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "Acheteurs", "purpose": "personalisation", "query": "orders >= 1"}))
        .send()
        .await
        .unwrap();
    let (status, segment) = read(resp).await;
    assert_eq!(status, 201, "{segment}");
    let buyers = shop.kpis(&format!("segment={}", segment["id"])).await;
    assert_eq!(buyers["filters"]["segment"]["members"], 2);
    assert_eq!(counts(&buyers), json!([2, 2, 2, 1, 3, 135.0]));
    assert_eq!(buyers["average_basket"], 45.0);
    assert_eq!(
        asked(&buyers),
        json!([
            ["pre_purchase_questionnaire", 1, 1],
            ["post_purchase_questionnaire", 1, 1]
        ])
    );

    // The journey map: per phase and touchpoint, from the catalog's touchpoints.
    let journey = shop.journey("").await;
    assert_eq!(
        journey,
        [
            (
                "discovery".to_owned(),
                vec![
                    json!(["newsletter_signup", 1, 1, 1, null, null]),
                    json!(["pre_purchase_questionnaire", 4, 3, 1, 3, 2]),
                    json!(["site_visit", 4, 4, 2, null, null]),
                ]
            ),
            (
                "purchase".to_owned(),
                vec![
                    json!(["checkout", 3, 2, 2, null, null]),
                    json!(["store_till", 1, 1, 1, null, null]),
                ]
            ),
            (
                "post_purchase".to_owned(),
                vec![json!(["post_purchase_questionnaire", 3, 2, 1, 2, 1])]
            ),
        ],
        "u3 was surveyed after their only order: not converted there"
    );
    let (_, map) = shop.get("/api/v1/journey").await;
    assert_eq!(map["phases"][1]["conversion_rate"], 1.0);
    assert_eq!(map["phases"][0]["profiles"], 4);
    assert_eq!(map["phases"][0]["touchpoints"][0]["touchpoint"], "contest");
    assert_eq!(map["phases"][0]["touchpoints"][0]["conversion_rate"], Value::Null);
    let email = shop.journey("channel=email").await;
    assert_eq!(
        email,
        [
            ("discovery".to_owned(), vec![]),
            ("purchase".to_owned(), vec![]),
            (
                "post_purchase".to_owned(),
                vec![json!(["post_purchase_questionnaire", 3, 2, 1, 2, 1])]
            ),
        ]
    );

    // Charts are SVG drawn by plotters, with their title as text and marks for the data:
    // points on the conversion line (five weeks with visitors), bars for the others (beyond the
    // white background), each with its figure.
    for (chart, title, mark, marks, figures) in [
        (
            "conversion&bucket=week",
            "Conversion rate by week",
            "<circle",
            5,
            &["2026-03-23"][..],
        ),
        (
            "response",
            "Questionnaire response rate by touchpoint",
            "<rect",
            3,
            &["2 / 3", "1 / 2"],
        ),
        (
            "consent",
            "Consent granted rate by touchpoint",
            "<rect",
            3,
            &["1 / 1", "6 / 8"],
        ),
    ] {
        let resp = shop
            .app
            .http
            .get(shop.app.url(&format!("/api/v1/kpis/chart.svg?chart={chart}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{chart}");
        let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(kind.starts_with("image/svg+xml"), "{kind}");
        let svg = resp.text().await.unwrap();
        assert!(
            svg.trim_start().starts_with("<svg"),
            "{chart}: {}",
            &svg[..svg.len().min(200)]
        );
        assert!(svg.trim_end().ends_with("</svg>"), "{chart}");
        let texts = texts(&svg);
        for text in [title].iter().chain(figures) {
            assert!(texts.contains(text), "{chart}: no `{text}` in\n{svg}");
        }
        assert!(
            svg.matches(mark).count() >= marks,
            "{chart}: fewer than {marks} {mark} in\n{svg}"
        );
    }
}

#[tokio::test]
async fn bad_parameters_are_named() {
    let shop = Shop::open().await;
    for (query, parameter) in [
        ("/api/v1/kpis?from=yesterday", "from"),
        ("/api/v1/kpis?from=2026-03-10&to=2026-03-01", "to"),
        ("/api/v1/kpis?bucket=year", "bucket"),
        ("/api/v1/kpis?bucket=day&from=2020-01-01&to=2026-01-01", "bucket"),
        ("/api/v1/kpis?source=nowhere", "source"),
        ("/api/v1/kpis?channel=telepathy", "channel"),
        ("/api/v1/kpis?segment=42", "segment"),
        ("/api/v1/kpis?segment=first", "segment"),
        ("/api/v1/kpis?segement=1", "segement"),
        ("/api/v1/journey?bucket=week", "bucket"),
        ("/api/v1/kpis/chart.svg?chart=pie", "chart"),
    ] {
        let (status, body) = shop.get(query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["code"], "invalid_query", "{query}: {body}");
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
        assert!(body["message"].as_str().unwrap().contains(parameter), "{query}: {body}");
    }
    let (status, _) = read(shop.app.http.get(shop.app.url("/api/v1/kpis")).send().await.unwrap()).await;
    assert_eq!(status, 401, "figures need a token");
    let empty = shop.kpis("").await;
    assert_eq!(counts(&empty), json!([0, 0, 0, 0, 0, 0.0]));
    assert_eq!(empty["conversion_rate"], Value::Null);
    assert_eq!(empty["series"], json!([]));
}
