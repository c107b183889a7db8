//! A caching reverse proxy: actix-web and `awc` forward every request to an upstream server,
//! and `Cache` in shared mode (RFC 9111) stores what the upstream's headers allow.
//!
//! ```sh
//! cargo run --release --example caching_proxy -- --listen 127.0.0.1:8080 --upstream http://127.0.0.1:8000
//! ```
//!
//! Every method (unusual ones included), path, query string, request header and body goes to
//! the upstream, and every status, header and body comes back, less the hop-by-hop fields of
//! RFC 9110 §7.6.1, with a `Via` added (§7.6.3). Bodies stream both ways; a response of known
//! length is stored when its headers allow it, revalidated with a conditional request when it
//! goes stale, and served stale while the upstream is down if `stale-if-error` allows it.

use std::time::Duration;

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    body::{BodyStream, BoxBody, SizedStream},
    http::{
        header::{self, HeaderMap, HeaderName, HeaderValue},
        StatusCode,
    },
    web, App, HttpRequest, HttpResponse, HttpServer,
};

/// The upstream's base URL (scheme and authority, no trailing slash).
#[derive(Clone)]
pub struct Upstream(pub String);

/// The `Via` this proxy adds (RFC 9110 §7.6.3).
const VIA: &str = "1.1 actix-response-cache";

/// The proxy as an actix service: `App::new().configure(proxy(store, upstream))`.
pub fn proxy(store: MemoryStore, upstream: Upstream) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        // One client per worker thread (awc's client is not Send); no redirects followed and no
        // bodies decoded: a proxy passes both on as they are.
        let client = awc::Client::builder()
            .disable_redirects()
            .timeout(Duration::from_secs(30))
            .no_default_headers()
            .finish();
        cfg.app_data(web::Data::new(client))
            .app_data(web::Data::new(upstream.clone()))
            // Request bodies stream through: no limit here beyond the upstream's own.
            .app_data(web::PayloadConfig::new(usize::MAX))
            .service(
                web::scope("")
                    .wrap(Cache::new(store.clone()).shared())
                    .default_service(web::to(forward)),
            );
    }
}

/// Forwards one request to the upstream and its response back.
async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    client: web::Data<awc::Client>,
    upstream: web::Data<Upstream>,
) -> HttpResponse {
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let url = format!("{}{path}", upstream.0);
    let mut outgoing = client
        .request(req.method().clone(), url)
        .no_decompress()
        .timeout(Duration::from_secs(30));
    let headers = outgoing.headers_mut();
    copy_end_to_end(req.headers(), headers);
    // The upstream is addressed by its own authority (awc sets Host from the URL); the
    // client's is passed on in Forwarded (RFC 7239).
    headers.remove(header::HOST);
    let client_host = req.connection_info().host().to_owned();
    let peer = req
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
    if let Ok(v) = HeaderValue::from_str(&format!("for=\"{peer}\";host=\"{client_host}\"")) {
        headers.append(header::FORWARDED, v);
    }
    headers.append(header::VIA, HeaderValue::from_static(VIA));

    // The request body streams through, with its length when the client gave one.
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let sent = match (length, chunked) {
        (Some(len), false) => outgoing.send_body(SizedStream::new(len, payload)).await,
        (None, true) => outgoing.send_body(BodyStream::new(payload)).await,
        _ => outgoing.send().await,
    };
    let upstream_res = match sent {
        Ok(res) => res,
        Err(err) => {
            log::warn!("upstream request failed: {err}");
            let status = match err {
                awc::error::SendRequestError::Timeout => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            };
            return HttpResponse::build(status).finish();
        }
    };

    let mut res = HttpResponse::build(upstream_res.status());
    let mut out = HeaderMap::new();
    copy_end_to_end(upstream_res.headers(), &mut out);
    for (name, value) in out.iter() {
        res.append_header((name.clone(), value.clone()));
    }
    res.append_header((header::VIA, HeaderValue::from_static(VIA)));

    let status = upstream_res.status();
    let no_body = status == StatusCode::NOT_MODIFIED
        || status == StatusCode::NO_CONTENT
        || status.is_informational();
    if no_body {
        return res.body(BoxBody::new(()));
    }
    // A body of known length stays sized, so that the cache can store it; others stream.
    let length = upstream_res
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match length {
        Some(len) => res.body(SizedStream::new(len, upstream_res)),
        None => res.streaming(upstream_res),
    }
}

/// Copies the end-to-end fields of `from` into `to`: everything but the hop-by-hop fields of
/// RFC 9110 §7.6.1 (those named by `Connection`, and the ones that are always hop-by-hop) and
/// `Content-Length`, which the body sets.
fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    let named: Vec<Vec<u8>> = from
        .get_all(header::CONNECTION)
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .map(|token| token.trim_ascii().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect();
    for (name, value) in from.iter() {
        if is_hop_by_hop(name) || named.iter().any(|n| n == name.as_str().as_bytes()) {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// The fields that never go beyond one connection (RFC 9110 §7.6.1, and the obsolete
/// `Keep-Alive` and `Proxy-Connection`), and the framing a new connection sets itself.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        *name,
        header::CONNECTION
            | header::TE
            | header::TRAILER
            | header::TRANSFER_ENCODING
            | header::UPGRADE
            | header::CONTENT_LENGTH
    ) || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// `--listen ADDR --upstream URL`, with defaults.
fn args() -> (String, String) {
    let mut listen = "127.0.0.1:8080".to_owned();
    let mut upstream = "http://127.0.0.1:8000".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().unwrap_or(listen),
            "--upstream" => upstream = args.next().unwrap_or(upstream),
            other => eprintln!("ignoring unknown argument {other:?}"),
        }
    }
    (listen, upstream.trim_end_matches('/').to_owned())
}

#[actix_web::main]
#[allow(dead_code)]
async fn main() -> std::io::Result<()> {
    env_logger::init_from_env(env_logger::Env::new().default_filter_or("info"));
    let (listen, upstream) = args();
    log::info!("caching proxy on http://{listen}, upstream {upstream}");
    let store = MemoryStore::new(100_000);
    let configure = proxy(store, Upstream(upstream));
    HttpServer::new(move || App::new().configure(configure.clone()))
        .bind(listen)?
        .run()
        .await
}
