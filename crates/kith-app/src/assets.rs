//! The page, built from `web/` (TypeScript, Preact, Vite: `npm run build`) into `assets/` and
//! embedded here, so `kith app` needs no Node.js. CI rebuilds it and fails if the committed
//! files differ.

use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

const INDEX: &[u8] = include_bytes!("../assets/index.html");
const SCRIPT: &[u8] = include_bytes!("../assets/app.js");
const STYLE: &[u8] = include_bytes!("../assets/app.css");
const ICON: &[u8] = include_bytes!("../assets/icon.svg");
/// The QR decoder, loaded by the page only when a safety number's code is scanned.
const SCANNER: &[u8] = include_bytes!("../assets/app-jsQR.js");

/// Any path that is not an API call: the page's files, and the page itself for the rest
/// (the page routes by itself).
pub(crate) async fn serve(uri: Uri) -> Response {
    let (body, kind) = match uri.path() {
        "/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/app-jsQR.js" => (SCANNER, "text/javascript; charset=utf-8"),
        "/app.css" => (STYLE, "text/css; charset=utf-8"),
        "/icon.svg" => (ICON, "image/svg+xml"),
        p if p.starts_with("/api/") => {
            return crate::refuse(StatusCode::NOT_FOUND, "not_found", "no such call");
        }
        _ => (INDEX, "text/html; charset=utf-8"),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}
