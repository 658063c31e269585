//! Weft's web trace viewer, embedded in the binary so `weft up` serves it on the query port.
//!
//! ```text
//!  ui/web (Preact + TypeScript) ── build.rs: npm ci, tsc, vite build ──> $OUT_DIR/dist ── rust-embed
//!
//!  browser ── GET /assets/<hashed file> ──> embedded bytes, cached for a year (names change per build)
//!          ── GET /search, /trace/<id>, /map, … ──> index.html: the app routes in the browser
//!          ── /api/v1/* (search, traces, dependencies, latency, metrics, sql) ──> weft-query
//! ```
//! Nothing the viewer loads comes from another origin: fonts are the system's, charts and
//! code are bundled.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "$OUT_DIR/dist"]
struct Assets;

/// Routes serving the viewer: every GET that no API route took.
pub fn router() -> Router {
    Router::new().fallback(serve)
}

async fn serve(method: axum::http::Method, uri: Uri) -> Response {
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response();
    }
    let path = uri.path().trim_start_matches('/');
    if path.starts_with("api/") {
        // An API path no route knows is a client error, not the app shell.
        return (StatusCode::NOT_FOUND, format!("no API endpoint at /{path}")).into_response();
    }
    if let Some(file) = Assets::get(path).filter(|_| !path.is_empty()) {
        let cache = if path.starts_with("assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        return asset(path, file.data.into_owned(), cache);
    }
    // Client-side routes (/search, /trace/<id>, …) all load the app shell.
    match Assets::get("index.html") {
        Some(index) => asset("index.html", index.data.into_owned(), "no-cache"),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "viewer not built").into_response(),
    }
}

fn asset(path: &str, body: Vec<u8>, cache: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_its_assets_are_embedded() {
        let index = Assets::get("index.html").expect("index.html embedded");
        let html = String::from_utf8(index.data.into_owned()).unwrap();
        let scripts: Vec<&str> = html
            .split("src=\"/")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect();
        assert!(!scripts.is_empty(), "index.html loads no script: {html}");
        for script in scripts {
            assert!(
                Assets::get(script).is_some(),
                "{script} is referenced but not embedded"
            );
        }
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(
            content_type("assets/index-abc.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("x.unknown"), "application/octet-stream");
    }
}
