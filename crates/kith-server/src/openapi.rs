//! The OpenAPI document, assembled from the handlers' `#[utoipa::path]` annotations and the
//! wire types' schemas, so it cannot drift from the code.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::*;

#[derive(OpenApi)]
#[openapi(
    info(title = "Kith API", description = "End-to-end encrypted messaging over MLS. Binary fields are base64; errors are {\"error\": {\"code\", \"message\"}}."),
    paths(
        ops::healthz, ops::metrics, ops::openapi,
        accounts::register, accounts::whoami, accounts::rotate_token, accounts::set_account_key, accounts::my_devices, accounts::rename_device, accounts::remove_device, accounts::devices, accounts::set_recovery_key, accounts::recover, accounts::post_note,
        links::offer, links::look, links::join, links::request, links::approve, links::result, links::answer, links::cancel, links::put_chunk, links::chunk,
        keys::upload, keys::claim,
        conversations::create, conversations::send, handshake::handshake, handshake::pending_leaves,
        queue::fetch, queue::ack, ws::connect,
        reports::report, blocks::block, blocks::unblock, blocks::blocked,
        businesses::search,
        kt::keys, kt::roots, kt::audit, kt::lookup, kt::history,
    ),
    components(schemas(kith_proto::ServerFrame, kith_proto::ClientFrame)),
    modifiers(&Bearer, &CommonAnswers),
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some("`<device-id>:<token>`, as returned by registration".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

/// Answers any operation can give, added where its annotation does not list them, so the
/// document promises every status a client can see: `503 unavailable` (storage unreachable or
/// stopping) everywhere; `401 unauthorized` and `403 suspended` where a token is needed;
/// `400 malformed_json`/`bad_base64` and `413 body_too_large` where a body is read.
struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                    )
                    .build(),
            )
        };
        for item in api.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post, &mut item.put, &mut item.delete]
                .into_iter()
                .flatten()
            {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_body = op.request_body.is_some();
                let answers = &mut op.responses.responses;
                let mut add = |status: &str, description: &str| {
                    answers.entry(status.to_string()).or_insert_with(|| error(description));
                };
                add(
                    "503",
                    "unavailable: the server cannot reach its storage or is stopping; see Retry-After",
                );
                if secured {
                    add("401", "unauthorized");
                    add("403", "suspended");
                }
                if has_body {
                    add("400", "malformed_json, bad_base64");
                    add("413", "body_too_large");
                }
            }
        }
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
