//! The OpenAPI 3 description of every endpoint, served at `/api/openapi.json`.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The JSON shape of every error.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Only describes the shape `confiance_core::error::ErrorBody` serialises to.
pub struct ErrorSchema {
    /// Stable snake_case code from the error table.
    code: String,
    /// What went wrong, naming the field or limit.
    message: String,
    /// invalid_request, auth or system.
    #[schema(rename = "type")]
    error_type: String,
    /// Documentation of the code.
    link: String,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "writeKey",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The source's write key as user name, empty password; or `writeKey` in the body",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Confiance", description = "Consent-first customer data platform: the Segment-compatible tracking API and the admin API."),
    paths(
        crate::collect::batch,
        crate::collect::identify,
        crate::collect::track,
        crate::collect::page,
        crate::collect::screen,
        crate::collect::group,
        crate::collect::alias,
        crate::admin::list_events,
        crate::admin::list_sources,
        crate::admin::create_source,
        crate::consent::record,
        crate::consent::state_and_history,
        crate::consent::receipts,
        crate::consent::stats,
        crate::consent::preference_link,
        crate::profiles::lookup,
        crate::profiles::profile,
        crate::profiles::merges,
        crate::profiles::undo,
        crate::profiles::status,
        crate::matching::run,
        crate::matching::reviews,
        crate::matching::accept,
        crate::matching::reject,
        crate::requests::receive,
        crate::requests::show,
        crate::requests::list,
        crate::requests::extend,
        crate::requests::refuse,
        crate::requests::process,
        crate::requests::archive,
        crate::requests::verify,
        crate::notices::list,
        crate::notices::retry,
        crate::notices::retry_one,
        crate::breaches::declare,
        crate::breaches::list,
        crate::breaches::show,
        crate::breaches::update,
        crate::breaches::subjects,
        crate::breaches::notification,
        crate::breaches::decide,
        crate::breaches::notify_people,
        crate::breaches::notify_job,
        crate::activate::create,
        crate::activate::update,
        crate::activate::list,
        crate::activate::show,
        crate::activate::sends,
        crate::activate::preview,
        crate::activate::happening,
        crate::activate::redeem,
        crate::activate::mailing_list,
        crate::activate::suggestions,
        crate::segments::preview,
        crate::segments::status,
        crate::segments::create,
        crate::segments::list,
        crate::segments::show,
        crate::segments::update,
        crate::segments::remove,
        crate::segments::export,
        crate::segments::transitions,
        crate::segments::export_status,
        crate::segments::export_file,
        crate::kpis::kpis,
        crate::kpis::chart,
        crate::kpis::journey,
        crate::retention::run,
        crate::governance::records,
        crate::governance::versions,
        crate::governance::notices,
        crate::governance::inventory,
        crate::governance::compliance_check,
        crate::ops::healthz,
        crate::ops::metrics,
        crate::ops::openapi_json,
    ),
    modifiers(&Security),
    tags(
        (name = "tracking", description = "What Segment SDKs call"),
        (name = "admin", description = "Behind an admin bearer token"),
        (name = "consent", description = "The consent ledger, behind an admin or DPO token"),
        (name = "requests", description = "Data-subject requests (GDPR Art. 12, 15–21)"),
        (name = "breaches", description = "The breach register (GDPR Art. 33, 34): figures, 72-hour clock, CNIL draft, letters to people"),
        (name = "profiles", description = "Golden records and identity resolution, behind an admin or DPO token"),
        (name = "campaigns", description = "Triggered, consent-checked campaigns, vouchers and happenings"),
        (name = "segments", description = "Purpose-bound segments, live counts and members exports"),
        (name = "kpis", description = "KPIs, charts and the journey map: counts and rates, never people"),
        (name = "governance", description = "Records of processing, notices and compliance checks, for the DPO"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;
