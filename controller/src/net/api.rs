//! The console's HTTPS server: a JSON API under `/api/v1` for the console and for scripts,
//! its OpenAPI document, a stream of live changes, and the console's own files.
//!
//! Every API call but the login needs a session cookie (with its CSRF token on anything
//! that is not a read) or an API token, and then the role its request asks for
//! ([`OpRequest::role`]); every call that changes anything goes through
//! [`ops::execute`], the same path as the local socket, and so into the audit log with
//! the operator's name. Fails closed: what cannot be checked is refused.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Query, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{MethodRouter, get, post},
};
use sensor_common::protocol::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;

use crate::{
    lock,
    net::{
        ops::{self, OpRequest, OpResponse},
        server::Shared,
    },
    services::operators::{self, Caller, Refusal},
    store::Role,
};

mod assets {
    include!(concat!(env!("OUT_DIR"), "/console.rs"));
}

/// The session cookie's name.
pub const COOKIE: &str = "vigil_session";
/// The header a session's CSRF token comes in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A request body larger than this is refused (a rule set must fit a frame to a host).
const MAX_BODY: usize = sensor_common::protocol::MAX_FRAME;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the console's TLS configuration: {0}")]
    Tls(String),
    #[error("the console's certificate: {0}")]
    Cert(#[from] crate::ca::CaError),
}

/// The peer address of a connection, put on each of its requests.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

#[derive(Clone)]
struct Api {
    shared: Shared,
}

/// One route of the API, as its OpenAPI document lists it.
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    /// The least role it needs; None for the login alone.
    pub role: Option<Role>,
    pub summary: &'static str,
}

const fn doc(
    method: &'static str,
    path: &'static str,
    role: Option<Role>,
    summary: &'static str,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        role,
        summary,
    }
}

const V: Option<Role> = Some(Role::Viewer);
const R: Option<Role> = Some(Role::Responder);
const A: Option<Role> = Some(Role::Admin);

/// Every route of the API. The OpenAPI document is made from this table, and the tests
/// walk it.
pub const ROUTES: &[RouteDoc] = &[
    doc(
        "post",
        "/api/v1/login",
        None,
        "Log in with {name, password}: a session cookie and its CSRF token",
    ),
    doc("post", "/api/v1/logout", V, "End this session"),
    doc(
        "get",
        "/api/v1/session",
        V,
        "Who this session is, its role and CSRF token",
    ),
    doc("get", "/api/v1/openapi.json", V, "This document"),
    doc(
        "get",
        "/api/v1/events",
        V,
        "Server-sent events: what changed (hosts, alerts, actions, audit)",
    ),
    doc(
        "post",
        "/api/v1/op",
        V,
        "Any operator request, as the local socket takes it (the CLI's remote path); the role is the request's",
    ),
    doc(
        "get",
        "/api/v1/hosts",
        V,
        "Enrolled hosts with online state, versions, drops and isolation",
    ),
    doc(
        "post",
        "/api/v1/hosts/{host}/contain",
        R,
        "Isolate a host's network {reason}",
    ),
    doc(
        "post",
        "/api/v1/hosts/{host}/release",
        R,
        "End a host's isolation once it is verified clean {force}",
    ),
    doc(
        "post",
        "/api/v1/hosts/{host}/kill",
        R,
        "Kill a process tree {pid, reason}",
    ),
    doc(
        "post",
        "/api/v1/hosts/{host}/quarantine",
        R,
        "Move a file into the host's vault {path, reason}",
    ),
    doc(
        "post",
        "/api/v1/hosts/{host}/undo",
        R,
        "Reverse a journaled action {action}",
    ),
    doc(
        "post",
        "/api/v1/hosts/{host}/revoke",
        A,
        "Revoke a host's certificate",
    ),
    doc(
        "get",
        "/api/v1/incidents",
        V,
        "Incidents across the fleet (?host=)",
    ),
    doc(
        "post",
        "/api/v1/incidents/{host}/{incident}/approve",
        R,
        "Carry out what the incident's actions await",
    ),
    doc(
        "post",
        "/api/v1/incidents/{host}/{incident}/deny",
        R,
        "Drop what the incident's actions await",
    ),
    doc("get", "/api/v1/alerts", V, "Alerts the hosts sent (?host=)"),
    doc(
        "get",
        "/api/v1/actions",
        V,
        "Action records the hosts sent, with their undo (?host=)",
    ),
    doc(
        "post",
        "/api/v1/hunt",
        R,
        "Run a hunt {query}; a syntax error names its position",
    ),
    doc("get", "/api/v1/hunts", V, "Standing hunts"),
    doc(
        "post",
        "/api/v1/hunts",
        R,
        "Keep a standing hunt {name, query, every_secs, respond}",
    ),
    doc("delete", "/api/v1/hunts/{name}", R, "Drop a standing hunt"),
    doc(
        "post",
        "/api/v1/sweeps",
        R,
        "Sweep the fleet for a SHA-256 {sha256}",
    ),
    doc("get", "/api/v1/sweeps/{id}", V, "A sweep's answers so far"),
    doc(
        "post",
        "/api/v1/rules",
        A,
        "Validate a rule set {files: [{name, text}]} and push it",
    ),
    doc(
        "post",
        "/api/v1/policy",
        A,
        "Validate a policy {text} and push it",
    ),
    doc(
        "get",
        "/api/v1/fleet-policy",
        V,
        "The fleet policy in force",
    ),
    doc(
        "put",
        "/api/v1/fleet-policy",
        A,
        "Set the fleet policy {text}",
    ),
    doc(
        "post",
        "/api/v1/enroll-tokens",
        A,
        "A one-time enrollment token {ttl_secs}",
    ),
    doc(
        "get",
        "/api/v1/notifications",
        V,
        "Deliveries per escalation target",
    ),
    doc("get", "/api/v1/blocks", V, "Fleet blocks in force"),
    doc("get", "/api/v1/audit", V, "Every change and who made it"),
    doc(
        "get",
        "/api/v1/operators",
        A,
        "Operators and their API tokens",
    ),
    doc(
        "post",
        "/api/v1/operators",
        A,
        "Make an operator {name, role}: a one-time password",
    ),
    doc(
        "delete",
        "/api/v1/operators/{name}",
        A,
        "Remove an operator",
    ),
    doc(
        "post",
        "/api/v1/operators/{name}/tokens",
        A,
        "An API token for a script",
    ),
    doc("delete", "/api/v1/tokens/{id}", A, "Revoke an API token"),
];

/// The OpenAPI document of [`ROUTES`].
pub fn openapi() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let entry = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        let params: Vec<serde_json::Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let role = r.role.map_or("none".to_owned(), |r| r.to_string());
        entry[r.method] = json!({
            "summary": r.summary,
            "parameters": params,
            "x-vigil-role": role,
            "security": if r.role.is_some() { json!([{"session": []}, {"token": []}]) } else { json!([]) },
            "responses": {
                "200": {"description": "the answer, as JSON"},
                "400": {"description": "the request was refused: {error} says why"},
                "401": {"description": "no session or token"},
                "403": {"description": "the role does not allow it, or the CSRF token is wrong"},
            }
        });
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Vigil controller", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {
            "session": {"type": "apiKey", "in": "cookie", "name": COOKIE},
            "token": {"type": "http", "scheme": "bearer"},
        }},
        "paths": paths,
    })
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": message.to_string()}))).into_response()
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Who is calling: an API token (`Authorization: Bearer`), else a session cookie.
fn caller(api: &Api, headers: &HeaderMap) -> Result<Caller, Refusal> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let token = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Refusal::BadToken)?;
        return operators::check_token(lock(&api.shared.fleet.store).as_ref(), token.trim());
    }
    let c = cookie(headers, COOKIE).ok_or(Refusal::NoSession)?;
    api.shared.sessions.check(&api.shared.fleet.store, c)
}

/// Lets through only a caller with a session or token, and a session's changes only with
/// its CSRF token; the caller goes on the request for the handler.
async fn authenticate(State(api): State<Api>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !path.starts_with("/api/") || path == "/api/v1/login" {
        return next.run(req).await;
    }
    let who = match caller(&api, req.headers()) {
        Ok(c) => c,
        Err(Refusal::Store) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store could not be read",
            );
        }
        Err(why) => {
            tracing::debug!(%why, path, "API call refused");
            return error(StatusCode::UNAUTHORIZED, "log in, or give an API token");
        }
    };
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if let (Some(expected), false) = (&who.csrf, reads) {
        let given = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !operators::same_secret(given, expected) {
            return error(
                StatusCode::FORBIDDEN,
                format!("a change needs this session's CSRF token in {CSRF_HEADER}"),
            );
        }
    }
    req.extensions_mut().insert(who);
    next.run(req).await
}

/// How the audit log and the sensors' journals name an operator of the API.
fn who(c: &Caller) -> String {
    let via = if c.csrf.is_some() {
        "console"
    } else {
        "API token"
    };
    format!("{} ({via})", c.name)
}

impl Api {
    /// Makes `req` for `caller`, if their role allows it; a refusal is audited too.
    async fn run(&self, caller: &Caller, req: OpRequest) -> Response {
        let needs = req.role();
        if caller.role < needs {
            let text = format!(
                "refused: {} is a {}; this needs {needs}",
                caller.name, caller.role
            );
            crate::services::audit(
                lock(&self.shared.fleet.store).as_mut(),
                &who(caller),
                &serde_json::to_string(&req).unwrap_or_default(),
                &text,
            );
            return error(StatusCode::FORBIDDEN, text);
        }
        // The API answers once, with the outcome: progress is for the socket's lines.
        let (progress, _) = tokio::sync::mpsc::unbounded_channel();
        match ops::execute(&self.shared, &req, &who(caller), progress).await {
            OpResponse::Ok(reply) => Json(reply).into_response(),
            OpResponse::Error { message } => error(StatusCode::BAD_REQUEST, message),
            OpResponse::Progress(_) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request answered with progress only",
            ),
        }
    }
}

type Caught = axum::Extension<Caller>;

#[derive(Deserialize)]
struct Login {
    name: String,
    password: String,
}

async fn login(
    State(api): State<Api>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    Json(l): Json<Login>,
) -> Response {
    let (shared, name) = (api.shared.clone(), l.name.clone());
    let address = peer.ip().to_string();
    let outcome = tokio::task::spawn_blocking(move || {
        shared
            .sessions
            .login(&shared.fleet.store, &l.name, &l.password, &address)
    })
    .await;
    let who = format!("{name} (console, {})", peer.ip());
    let result = match outcome {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let text = match &result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("refused: {e}"),
    };
    crate::services::audit(
        lock(&api.shared.fleet.store).as_mut(),
        &who,
        "{\"op\":\"login\"}",
        &text,
    );
    match result {
        Ok(new) => {
            let cookie = format!(
                "{COOKIE}={}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
                new.cookie,
                operators::SESSION_TTL.as_secs()
            );
            let mut resp = Json(json!({
                "name": new.caller.name,
                "role": new.caller.role,
                "csrf": new.caller.csrf,
            }))
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Err(Refusal::RateLimited) => error(StatusCode::TOO_MANY_REQUESTS, Refusal::RateLimited),
        Err(Refusal::Store) => error(StatusCode::SERVICE_UNAVAILABLE, Refusal::Store),
        Err(_) => error(StatusCode::UNAUTHORIZED, Refusal::BadCredentials),
    }
}

async fn logout(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Some(c) = cookie(&headers, COOKIE) {
        api.shared.sessions.logout(c);
    }
    let mut resp = Json(json!({"logged_out": true})).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "vigil_session=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0",
        ),
    );
    resp
}

async fn session(axum::Extension(c): Caught) -> Response {
    Json(json!({"name": c.name, "role": c.role, "csrf": c.csrf})).into_response()
}

/// Live changes as server-sent events (`change`, or `lagged` when some were missed).
async fn events(State(api): State<Api>) -> Response {
    let rx = api.shared.fleet.changes.subscribe();
    let stream = tokio_stream::wrappers::BroadcastStream::new(rx).map(|item| {
        Ok::<_, Infallible>(match item {
            Ok(change) => Event::default()
                .event("change")
                .json_data(&change)
                .unwrap_or_else(|_| Event::default().event("change")),
            Err(_) => Event::default()
                .event("lagged")
                .data("some changes were missed"),
        })
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize)]
struct HostQuery {
    host: Option<String>,
}

#[derive(Deserialize)]
struct Reason {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct ReleaseBody {
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize)]
struct KillBody {
    pid: u32,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct QuarantineBody {
    path: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct UndoBody {
    action: String,
}

#[derive(Deserialize)]
struct QueryBody {
    query: String,
}

#[derive(Deserialize)]
struct StandingBody {
    name: String,
    query: String,
    every_secs: u64,
    #[serde(default = "record")]
    respond: crate::store::Respond,
}

fn record() -> crate::store::Respond {
    crate::store::Respond::Record
}

#[derive(Deserialize)]
struct SweepBody {
    sha256: String,
}

#[derive(Deserialize)]
struct RulesBody {
    files: Vec<sensor_common::protocol::RuleFile>,
}

#[derive(Deserialize)]
struct TextBody {
    text: String,
}

#[derive(Deserialize)]
struct TtlBody {
    #[serde(default = "hour")]
    ttl_secs: u64,
}

fn hour() -> u64 {
    3600
}

#[derive(Deserialize)]
struct OperatorBody {
    name: String,
    role: Role,
}

fn reason(r: Option<String>, default: &str) -> String {
    r.filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// A route whose request is always the same.
fn fixed(method: fn(Handler) -> MethodRouter<Api>, req: OpRequest) -> MethodRouter<Api> {
    method(std::sync::Arc::new(move |a, c, _, _| {
        let req = req.clone();
        Box::pin(async move { a.run(&c, req).await })
    }))
}

/// A route whose request is made from its path parameters (one as a string, several as a
/// tuple) and its JSON body (or query).
fn shaped<P, B>(
    method: fn(Handler) -> MethodRouter<Api>,
    make: fn(P, B) -> OpRequest,
) -> MethodRouter<Api>
where
    P: serde::de::DeserializeOwned + Send + 'static,
    B: serde::de::DeserializeOwned + Send + 'static,
{
    method(std::sync::Arc::new(move |a, c, path, body| {
        Box::pin(async move {
            let p: P = match serde_json::from_value(path) {
                Ok(p) => p,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("the path: {e}")),
            };
            let b: B = match serde_json::from_value(body) {
                Ok(b) => b,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("the request body: {e}")),
            };
            a.run(&c, make(p, b)).await
        })
    }))
}

/// What a route's handler gets: the API, the caller, its path parameters and its body (or
/// query), both as JSON values for the route to shape.
type Handler = std::sync::Arc<
    dyn Fn(
            Api,
            Caller,
            serde_json::Value,
            serde_json::Value,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>
        + Send
        + Sync,
>;

/// The path parameters as a JSON value, in the route's order: none as null, one as a
/// string, several as an array.
fn path_value(
    params: Result<axum::extract::RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
) -> serde_json::Value {
    let values: Vec<String> = params
        .map(|p| p.iter().map(|(_, v)| v.to_owned()).collect())
        .unwrap_or_default();
    match values.as_slice() {
        [] => serde_json::Value::Null,
        [one] => json!(one),
        many => json!(many),
    }
}

/// Serves `h` for GET: its query string is the body.
fn getter(h: Handler) -> MethodRouter<Api> {
    get(
        move |State(a): State<Api>,
              axum::Extension(c): Caught,
              params: Result<
            axum::extract::RawPathParams,
            axum::extract::rejection::RawPathParamsRejection,
        >,
              Query(q): Query<serde_json::Map<String, serde_json::Value>>| {
            let h = h.clone();
            async move { h(a, c, path_value(params), serde_json::Value::Object(q)).await }
        },
    )
}

fn with_body(h: Handler, method: axum::routing::MethodFilter) -> MethodRouter<Api> {
    let handler = move |State(a): State<Api>,
                        axum::Extension(c): Caught,
                        params: Result<
        axum::extract::RawPathParams,
        axum::extract::rejection::RawPathParamsRejection,
    >,
                        body: axum::body::Bytes| {
        let h = h.clone();
        async move {
            let body = if body.is_empty() {
                json!({})
            } else {
                match serde_json::from_slice(&body) {
                    Ok(v) => v,
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("the request body is not JSON: {e}"),
                        );
                    }
                }
            };
            h(a, c, path_value(params), body).await
        }
    };
    axum::routing::on(method, handler)
}

fn poster(h: Handler) -> MethodRouter<Api> {
    with_body(h, axum::routing::MethodFilter::POST)
}

fn putter(h: Handler) -> MethodRouter<Api> {
    with_body(h, axum::routing::MethodFilter::PUT)
}

fn deleter(h: Handler) -> MethodRouter<Api> {
    with_body(h, axum::routing::MethodFilter::DELETE)
}

/// The router: the API (behind [`authenticate`]) and the console's files.
fn router(api: Api) -> Router {
    use OpRequest as Op;
    let routes = Router::new()
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/session", get(session))
        .route("/api/v1/openapi.json", get(|| async { Json(openapi()) }))
        .route("/api/v1/events", get(events))
        .route(
            "/api/v1/op",
            shaped(poster, |_: serde::de::IgnoredAny, req: OpRequest| req),
        )
        .route("/api/v1/hosts", fixed(getter, Op::Hosts))
        .route(
            "/api/v1/hosts/{host}/contain",
            shaped(poster, |host, b: Reason| Op::Contain {
                host,
                reason: reason(b.reason, "contained from the console"),
            }),
        )
        .route(
            "/api/v1/hosts/{host}/release",
            shaped(poster, |host, b: ReleaseBody| Op::Release {
                host,
                force: b.force,
            }),
        )
        .route(
            "/api/v1/hosts/{host}/kill",
            shaped(poster, |host, b: KillBody| Op::Kill {
                host,
                pid: b.pid,
                reason: reason(b.reason, "killed from the console"),
            }),
        )
        .route(
            "/api/v1/hosts/{host}/quarantine",
            shaped(poster, |host, b: QuarantineBody| Op::Quarantine {
                host,
                path: b.path,
                reason: reason(b.reason, "quarantined from the console"),
            }),
        )
        .route(
            "/api/v1/hosts/{host}/undo",
            shaped(poster, |host, b: UndoBody| Op::Undo {
                host,
                action: b.action,
            }),
        )
        .route(
            "/api/v1/hosts/{host}/revoke",
            shaped(poster, |host, _: serde::de::IgnoredAny| Op::Revoke { host }),
        )
        .route(
            "/api/v1/incidents",
            shaped(getter, |_: serde::de::IgnoredAny, q: HostQuery| {
                Op::Incidents { host: q.host }
            }),
        )
        .route(
            "/api/v1/incidents/{host}/{incident}/approve",
            shaped(poster, |(host, incident), _: serde::de::IgnoredAny| {
                Op::Approve { host, incident }
            }),
        )
        .route(
            "/api/v1/incidents/{host}/{incident}/deny",
            shaped(poster, |(host, incident), _: serde::de::IgnoredAny| {
                Op::Deny { host, incident }
            }),
        )
        .route(
            "/api/v1/alerts",
            shaped(getter, |_: serde::de::IgnoredAny, q: HostQuery| {
                Op::Records {
                    host: q.host,
                    stream: Stream::Alerts,
                }
            }),
        )
        .route(
            "/api/v1/actions",
            shaped(getter, |_: serde::de::IgnoredAny, q: HostQuery| {
                Op::Records {
                    host: q.host,
                    stream: Stream::Actions,
                }
            }),
        )
        .route(
            "/api/v1/hunt",
            shaped(poster, |_: serde::de::IgnoredAny, b: QueryBody| Op::Hunt {
                query: b.query,
            }),
        )
        .route(
            "/api/v1/hunts",
            fixed(getter, Op::Hunts).merge(shaped(
                poster,
                |_: serde::de::IgnoredAny, b: StandingBody| Op::HuntAdd {
                    name: b.name,
                    query: b.query,
                    every_secs: b.every_secs,
                    respond: b.respond,
                },
            )),
        )
        .route(
            "/api/v1/hunts/{name}",
            shaped(deleter, |name, _: serde::de::IgnoredAny| Op::HuntRemove {
                name,
            }),
        )
        .route(
            "/api/v1/sweeps",
            shaped(poster, |_: serde::de::IgnoredAny, b: SweepBody| Op::Sweep {
                sha256: b.sha256,
            }),
        )
        .route(
            "/api/v1/sweeps/{id}",
            shaped(getter, |id, _: serde::de::IgnoredAny| Op::SweepResults {
                id,
            }),
        )
        .route(
            "/api/v1/rules",
            shaped(poster, |_: serde::de::IgnoredAny, b: RulesBody| {
                Op::PushRules {
                    set: sensor_common::protocol::RuleSet::new(b.files),
                }
            }),
        )
        .route(
            "/api/v1/policy",
            shaped(poster, |_: serde::de::IgnoredAny, b: TextBody| {
                Op::PushPolicy { text: b.text }
            }),
        )
        .route(
            "/api/v1/fleet-policy",
            fixed(getter, Op::FleetPolicy { text: None })
                .merge(shaped(putter, |_: serde::de::IgnoredAny, b: TextBody| {
                    Op::FleetPolicy { text: Some(b.text) }
                })),
        )
        .route(
            "/api/v1/enroll-tokens",
            shaped(poster, |_: serde::de::IgnoredAny, b: TtlBody| {
                Op::EnrollToken {
                    ttl_secs: b.ttl_secs,
                }
            }),
        )
        .route("/api/v1/notifications", fixed(getter, Op::Notifications))
        .route("/api/v1/blocks", fixed(getter, Op::FleetBlocks))
        .route("/api/v1/audit", fixed(getter, Op::Audit))
        .route(
            "/api/v1/operators",
            fixed(getter, Op::Operators).merge(shaped(
                poster,
                |_: serde::de::IgnoredAny, b: OperatorBody| Op::OperatorAdd {
                    name: b.name,
                    role: b.role,
                },
            )),
        )
        .route(
            "/api/v1/operators/{name}",
            shaped(deleter, |name, _: serde::de::IgnoredAny| {
                Op::OperatorRemove { name }
            }),
        )
        .route(
            "/api/v1/operators/{name}/tokens",
            shaped(poster, |name, _: serde::de::IgnoredAny| Op::OperatorToken {
                name,
            }),
        )
        .route(
            "/api/v1/tokens/{id}",
            shaped(deleter, |id, _: serde::de::IgnoredAny| Op::TokenRevoke {
                id,
            }),
        )
        .route(
            "/api/{*rest}",
            axum::routing::any(|| async {
                error(
                    StatusCode::NOT_FOUND,
                    "no such API route: see /api/v1/openapi.json",
                )
            }),
        )
        .fallback(get(asset));
    routes
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(security_headers))
        .with_state(api)
}

/// Headers every answer carries: no framing, no sniffing, no referrer, a strict CSP.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    resp
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// One of the console's files; any other path is the page itself (the console routes in
/// the browser).
async fn asset(uri: axum::http::Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let found = assets::ASSETS
        .iter()
        .find(|(p, _)| *p == path)
        .or_else(|| assets::ASSETS.iter().find(|(p, _)| *p == "index.html"));
    match found {
        Some((p, body)) => (
            [(header::CONTENT_TYPE, content_type(p))],
            body.to_vec(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!doctype html><title>Vigil</title><p>This controller was built without its console: \
             run <code>cargo xtask console</code> (or <code>cargo xtask run</code>) and build it again. \
             The API under /api/v1 works without it.</p>",
        )
            .into_response(),
    }
}

/// The console's TLS identity: the given certificate and key (PEM files), or one the
/// controller's CA issues for `listen` and localhost.
pub fn tls_config(
    shared: &Shared,
    listen: SocketAddr,
    cert_key: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<Arc<rustls::ServerConfig>, ApiError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let (chain, key) = match cert_key {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ApiError::Tls(format!("{}: {e:?}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| ApiError::Tls(format!("{}: {e:?}", key.display())))?;
            (chain, key)
        }
        None => {
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            if !listen.ip().is_unspecified() {
                names.push(listen.ip().to_string());
            }
            if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
                names.push(h.trim().to_owned());
            }
            names.sort();
            names.dedup();
            shared.ca.console_identity(&names)?
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| ApiError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Binds the console's address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ApiError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Listen { addr, source })
}

/// Serves the console and its API over TLS on `listener`, until the runtime stops.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, shared: Shared) {
    let app = router(Api { shared });
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "console accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "console TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let svc = tower::ServiceExt::map_request(
                app,
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(Peer(peer));
                    req
                },
            );
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "console connection ended");
            }
        });
    }
}
