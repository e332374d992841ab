//! The admin console: a page at `/` for a tenant's Global Administrator, the admin center's
//! Auto-claim policy tab and report page. It is built only on the admin API: the page sends the
//! token the administrator pastes to the same `/v1` endpoints as any other client, so it has no
//! way in of its own and the server serves nothing here but static files.
//!
//! The files are plain HTML, CSS and JavaScript embedded in the binary: nothing to build, nothing
//! fetched from a CDN or anywhere else at run time, the same page in every copy of a version. The
//! page has no inline script or style, so the Content-Security-Policy can allow only this origin's
//! files, which takes the usual injection routes away even if the page had a bug.
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::api::{check_query, NO_PARAMETERS};
use super::problem::Problem;

/// Only this origin's files, no inline code, no framing, no plugins; `connect-src 'self'` keeps the
/// token from being sent anywhere but this server.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("console/index.html"),
    },
    Asset {
        path: "/console/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("console/app.js"),
    },
    Asset {
        path: "/console/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("console/app.css"),
    },
    Asset {
        path: "/console/icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("console/icon.svg"),
    },
];

/// The console's routes, to merge beside the API's.
pub fn router() -> Router {
    let mut router = Router::new();
    for asset in ASSETS {
        router = router.route(
            asset.path,
            get(move |uri: Uri| async move { serve(asset, &uri) }),
        );
    }
    router
}

fn serve(asset: &'static Asset, uri: &Uri) -> Result<Response, Problem> {
    check_query(uri, NO_PARAMETERS)?;
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The files have no version in their names: a browser checks again each time (a new binary
    // must not run with an old script), and a proxy never keeps a copy for others.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = ASSETS[0].body;
        assert!(!html.contains("<style"), "inline style");
        assert!(!html.contains(" style="), "inline style attribute");
        for (at, _) in html.match_indices(" on") {
            let name: String = html[at + 3..]
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            let after = html[at + 3 + name.len()..].chars().next();
            assert!(
                name.is_empty() || after != Some('='),
                "inline event handler on{name}"
            );
        }
        for script in html.split("<script").skip(1) {
            assert!(script.contains("src="), "inline script");
        }
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no other origin"
        );
    }
}
