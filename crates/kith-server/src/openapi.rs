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
        accounts::register, accounts::whoami, accounts::devices,
        keys::upload, keys::claim,
        conversations::create, conversations::send, handshake::handshake,
        queue::fetch, queue::ack, ws::connect,
        reports::report, blocks::block, blocks::unblock, blocks::blocked,
        businesses::search,
    ),
    components(schemas(kith_proto::ServerFrame, kith_proto::ClientFrame)),
    modifiers(&Bearer),
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

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
