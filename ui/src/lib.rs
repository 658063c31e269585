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
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "$OUT_DIR/dist"]
struct Assets;

/// Routes serving the viewer: every GET that no API route took.
pub fn router() -> Router {
    Router::new().fallback(serve)
}

async fn serve(method: axum::http::Method, uri: Uri, headers: HeaderMap) -> Response {
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
        // build.rs stores a gzip copy of each text asset; send it to clients that take gzip.
        if accepts_gzip(&headers)
            && let Some(gz) = Assets::get(&format!("{path}.gz"))
        {
            let mut response = asset(path, gz.data.into_owned(), cache);
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            return response;
        }
        let mut response = asset(path, file.data.into_owned(), cache);
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        return response;
    }
    // Client-side routes (/search, /trace/<id>, …) all load the app shell.
    match Assets::get("index.html") {
        Some(index) => asset("index.html", index.data.into_owned(), "no-cache"),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "viewer not built").into_response(),
    }
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            // "gzip;q=0" means the client refuses gzip.
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
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
    fn text_assets_have_a_gzip_copy_that_inflates_to_the_original() {
        use std::io::Read as _;
        let scripts: Vec<String> = Assets::iter()
            .filter(|p| p.starts_with("assets/") && p.ends_with(".js"))
            .map(|p| p.into_owned())
            .collect();
        assert!(!scripts.is_empty());
        for script in scripts {
            let plain = Assets::get(&script).unwrap().data;
            let gz = Assets::get(&format!("{script}.gz"))
                .expect("gzip copy")
                .data;
            let mut inflated = Vec::new();
            flate2::read::GzDecoder::new(gz.as_ref())
                .read_to_end(&mut inflated)
                .unwrap();
            assert_eq!(inflated, plain.as_ref(), "{script}");
        }
    }

    #[test]
    fn gzip_is_sent_only_when_accepted() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
            accepts_gzip(&headers)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, gzip;q=0.8"));
        assert!(with("*"));
        assert!(!with("br"));
        assert!(!with("gzip;q=0"));
        assert!(!accepts_gzip(&HeaderMap::new()));
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
