//! The route table of SPEC §6, declared once: the router dispatches from
//! it (through `matchit`), 404, 405 and `Allow` are derived from it, the
//! metrics label each request by it, and the tests hold the OpenAPI
//! document (`openapi.json`, served at `GET /openapi.json`) to it, so none of
//! them can drift from what the server serves.

use cloro_auth_core::ErrorCode;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Response};

use cloro_guard::{ApiError, Body, full};

use crate::secret_scanning::Partner;

/// What answers a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handler {
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /openapi.json`.
    OpenApi,
    /// `GET /v1/whoami`.
    Whoami,
    /// `/auth/verify[/{path}]`, any method.
    Verify,
    /// Any other `/v1/*`, any method: forwarded upstream.
    Gateway,
    /// A secret-scanning partner's signed report (SPEC §12).
    SecretScanning(Partner),
    /// An admin route; the admin token is checked before anything else.
    Admin(AdminRoute),
    /// The dashboard or the portal (SPEC §13): HTML pages, which route
    /// their own paths.
    Dashboard,
}

/// The admin routes (their ids come from the path parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AdminRoute {
    /// `POST /admin/v1/keys`.
    CreateKey,
    /// `GET /admin/v1/keys`.
    ListKeys,
    /// `GET /admin/v1/keys/{id}`.
    GetKey,
    /// `PATCH /admin/v1/keys/{id}`.
    UpdateKey,
    /// `POST /admin/v1/keys/{id}/revoke`.
    RevokeKey,
    /// `POST /admin/v1/keys/{id}/rotate`.
    RotateKey,
    /// `POST /admin/v1/keys/{id}/credits`.
    KeyCredits,
    /// `POST /admin/v1/keys/revoke-leaked`.
    RevokeLeaked,
    /// `GET /admin/v1/keys/{id}/usage`.
    KeyUsage,
    /// `GET /admin/v1/accounts/{account_id}/usage`.
    AccountUsage,
    /// `GET /admin/v1/audit`.
    Audit,
    /// `GET /admin/v1/plans`.
    Plans,
    /// `GET /admin/v1/accounts/{account_id}`.
    GetAccount,
    /// `PUT /admin/v1/accounts/{account_id}`.
    SetAccountPlan,
    /// `GET /admin/v1/accounts/{account_id}/quota`.
    AccountQuota,
    /// `POST /admin/v1/accounts/{account_id}/portal-sessions`.
    PortalSession,
    /// `POST /admin/v1/tokens`.
    CreateToken,
    /// `GET /admin/v1/tokens`.
    ListTokens,
    /// `DELETE /admin/v1/tokens/{id}`.
    DeleteToken,
    /// `POST /admin/v1/webhooks`.
    CreateWebhook,
    /// `GET /admin/v1/webhooks`.
    ListWebhooks,
    /// `GET /admin/v1/webhooks/{id}`.
    GetWebhook,
    /// `DELETE /admin/v1/webhooks/{id}`.
    DeleteWebhook,
    /// `GET /admin/v1/webhooks/{id}/deliveries`.
    WebhookDeliveries,
    /// Any other path under `/admin`: 404, but only after the token check,
    /// so that without the token nobody learns which admin paths exist.
    Unknown,
}

/// The metrics label of a route: a fixed small set, so no client-chosen
/// path can ever become a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteLabel {
    /// `/v1/whoami`.
    Whoami,
    /// `/auth/verify[/…]`.
    Verify,
    /// Any other `/v1/*`.
    Gateway,
    /// `/admin/*`.
    Admin,
    /// `/partners/*`: secret-scanning reports.
    Partners,
    /// `/dashboard/*` and `/portal/*`.
    Dashboard,
    /// Health, readiness, metrics, the OpenAPI document, and paths no
    /// route serves.
    Ops,
}

impl RouteLabel {
    pub(crate) const ALL: [RouteLabel; 7] = [
        RouteLabel::Whoami,
        RouteLabel::Verify,
        RouteLabel::Gateway,
        RouteLabel::Admin,
        RouteLabel::Partners,
        RouteLabel::Dashboard,
        RouteLabel::Ops,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RouteLabel::Whoami => "whoami",
            RouteLabel::Verify => "verify",
            RouteLabel::Gateway => "gateway",
            RouteLabel::Admin => "admin",
            RouteLabel::Partners => "partners",
            RouteLabel::Dashboard => "dashboard",
            RouteLabel::Ops => "ops",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Which methods a route answers.
#[derive(Debug)]
pub enum Methods {
    /// Any method, one handler.
    Any(HandlerRef),
    /// These methods (`HEAD` is served wherever `GET` is).
    Each(&'static [(Method, HandlerRef)]),
}

/// A handler, opaque outside the crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandlerRef(Handler);

/// One path of the table and what it answers.
#[derive(Debug)]
pub struct Route {
    /// The path in `matchit` syntax: `{name}` is one segment, `{*name}` the
    /// rest of the path (at least one character).
    pub path: &'static str,
    /// What each method gets.
    pub methods: Methods,
    /// Whether the OpenAPI document lists this path (the fallbacks that
    /// only give 404 are not operations).
    pub documented: bool,
    label: RouteLabel,
}

const fn admin(route: AdminRoute) -> HandlerRef {
    HandlerRef(Handler::Admin(route))
}

/// Every route of SPEC §6.
pub const ROUTES: &[Route] = &[
    // Public, with an API key.
    Route {
        path: "/v1/whoami",
        methods: Methods::Each(&[(Method::GET, HandlerRef(Handler::Whoami))]),
        documented: true,
        label: RouteLabel::Whoami,
    },
    Route {
        path: "/auth/verify",
        methods: Methods::Any(HandlerRef(Handler::Verify)),
        documented: true,
        label: RouteLabel::Verify,
    },
    Route {
        path: "/auth/verify/{*path}",
        methods: Methods::Any(HandlerRef(Handler::Verify)),
        documented: true,
        label: RouteLabel::Verify,
    },
    Route {
        // The path suffix `/`: the original request's path is `/`.
        path: "/auth/verify/",
        methods: Methods::Any(HandlerRef(Handler::Verify)),
        documented: false,
        label: RouteLabel::Verify,
    },
    Route {
        path: "/v1/{*path}",
        methods: Methods::Any(HandlerRef(Handler::Gateway)),
        documented: true,
        label: RouteLabel::Gateway,
    },
    Route {
        path: "/v1/",
        methods: Methods::Any(HandlerRef(Handler::Gateway)),
        documented: false,
        label: RouteLabel::Gateway,
    },
    // Admin, with the admin token.
    Route {
        path: "/admin/v1/keys",
        methods: Methods::Each(&[
            (Method::GET, admin(AdminRoute::ListKeys)),
            (Method::POST, admin(AdminRoute::CreateKey)),
        ]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        // Before `{id}` in meaning, not only in order: `matchit` prefers a
        // static segment, so no key id can be `revoke-leaked`.
        path: "/admin/v1/keys/revoke-leaked",
        methods: Methods::Each(&[(Method::POST, admin(AdminRoute::RevokeLeaked))]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/keys/{id}",
        methods: Methods::Each(&[
            (Method::GET, admin(AdminRoute::GetKey)),
            (Method::PATCH, admin(AdminRoute::UpdateKey)),
        ]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/keys/{id}/revoke",
        methods: Methods::Each(&[(Method::POST, admin(AdminRoute::RevokeKey))]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/keys/{id}/rotate",
        methods: Methods::Each(&[(Method::POST, admin(AdminRoute::RotateKey))]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/keys/{id}/credits",
        methods: Methods::Each(&[(Method::POST, admin(AdminRoute::KeyCredits))]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/keys/{id}/usage",
        methods: Methods::Each(&[(Method::GET, admin(AdminRoute::KeyUsage))]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/audit",
        methods: Methods::Each(&[(Method::GET, admin(AdminRoute::Audit))]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/plans",
        methods: Methods::Each(&[(Method::GET, admin(AdminRoute::Plans))]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/accounts/{account_id}",
        methods: Methods::Each(&[
            (Method::GET, admin(AdminRoute::GetAccount)),
            (Method::PUT, admin(AdminRoute::SetAccountPlan)),
        ]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/accounts/{account_id}/quota",
        methods: Methods::Each(&[(Method::GET, admin(AdminRoute::AccountQuota))]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/accounts/{account_id}/portal-sessions",
        methods: Methods::Each(&[(Method::POST, admin(AdminRoute::PortalSession))]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/accounts/{account_id}/usage",
        methods: Methods::Each(&[(Method::GET, admin(AdminRoute::AccountUsage))]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/tokens",
        methods: Methods::Each(&[
            (Method::GET, admin(AdminRoute::ListTokens)),
            (Method::POST, admin(AdminRoute::CreateToken)),
        ]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/tokens/{id}",
        methods: Methods::Each(&[(Method::DELETE, admin(AdminRoute::DeleteToken))]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/webhooks",
        methods: Methods::Each(&[
            (Method::GET, admin(AdminRoute::ListWebhooks)),
            (Method::POST, admin(AdminRoute::CreateWebhook)),
        ]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/webhooks/{id}",
        methods: Methods::Each(&[
            (Method::GET, admin(AdminRoute::GetWebhook)),
            (Method::DELETE, admin(AdminRoute::DeleteWebhook)),
        ]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/v1/webhooks/{id}/deliveries",
        methods: Methods::Each(&[(Method::GET, admin(AdminRoute::WebhookDeliveries))]),
        documented: true,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin",
        methods: Methods::Any(admin(AdminRoute::Unknown)),
        documented: false,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/",
        methods: Methods::Any(admin(AdminRoute::Unknown)),
        documented: false,
        label: RouteLabel::Admin,
    },
    Route {
        path: "/admin/{*rest}",
        methods: Methods::Any(admin(AdminRoute::Unknown)),
        documented: false,
        label: RouteLabel::Admin,
    },
    // Secret-scanning partners, with a signature instead of a token.
    Route {
        path: "/partners/github/secret-scanning",
        methods: Methods::Each(&[(
            Method::POST,
            HandlerRef(Handler::SecretScanning(Partner::GitHub)),
        )]),
        documented: true,
        label: RouteLabel::Partners,
    },
    Route {
        path: "/partners/gitlab/secret-detection",
        methods: Methods::Each(&[(
            Method::POST,
            HandlerRef(Handler::SecretScanning(Partner::GitLab)),
        )]),
        documented: true,
        label: RouteLabel::Partners,
    },
    // The dashboard and the portal, for people (SPEC §13): HTML, routed
    // by `dashboard::Page`, not API operations.
    Route {
        path: "/dashboard",
        methods: Methods::Any(HandlerRef(Handler::Dashboard)),
        documented: false,
        label: RouteLabel::Dashboard,
    },
    Route {
        path: "/dashboard/{*rest}",
        methods: Methods::Any(HandlerRef(Handler::Dashboard)),
        documented: false,
        label: RouteLabel::Dashboard,
    },
    Route {
        path: "/dashboard/",
        methods: Methods::Any(HandlerRef(Handler::Dashboard)),
        documented: false,
        label: RouteLabel::Dashboard,
    },
    Route {
        path: "/portal",
        methods: Methods::Any(HandlerRef(Handler::Dashboard)),
        documented: false,
        label: RouteLabel::Dashboard,
    },
    Route {
        path: "/portal/{*rest}",
        methods: Methods::Any(HandlerRef(Handler::Dashboard)),
        documented: false,
        label: RouteLabel::Dashboard,
    },
    Route {
        path: "/portal/",
        methods: Methods::Any(HandlerRef(Handler::Dashboard)),
        documented: false,
        label: RouteLabel::Dashboard,
    },
    // Operational.
    Route {
        path: "/healthz",
        methods: Methods::Each(&[(Method::GET, HandlerRef(Handler::Healthz))]),
        documented: true,
        label: RouteLabel::Ops,
    },
    Route {
        path: "/readyz",
        methods: Methods::Each(&[(Method::GET, HandlerRef(Handler::Readyz))]),
        documented: true,
        label: RouteLabel::Ops,
    },
    Route {
        path: "/metrics",
        methods: Methods::Each(&[(Method::GET, HandlerRef(Handler::Metrics))]),
        documented: true,
        label: RouteLabel::Ops,
    },
    Route {
        path: "/openapi.json",
        methods: Methods::Each(&[(Method::GET, HandlerRef(Handler::OpenApi))]),
        documented: true,
        label: RouteLabel::Ops,
    },
];

impl Route {
    /// The path as the OpenAPI document writes it (`{*path}` → `{path}`).
    pub fn openapi_path(&self) -> String {
        self.path.replace("{*", "{")
    }

    /// The methods the OpenAPI document lists for it: `None` for any method.
    pub fn documented_methods(&self) -> Option<Vec<&'static str>> {
        match &self.methods {
            Methods::Any(_) => None,
            Methods::Each(each) => Some(each.iter().map(|(method, _)| method.as_str()).collect()),
        }
    }

    /// What answers `method` here; `HEAD` is answered as `GET` (hyper sends
    /// no body for it).
    fn handler(&self, method: &Method) -> Option<Handler> {
        match &self.methods {
            Methods::Any(handler) => Some(handler.0),
            Methods::Each(each) => each
                .iter()
                .find(|(m, _)| m == method || (*method == Method::HEAD && *m == Method::GET))
                .map(|(_, handler)| handler.0),
        }
    }

    /// The `Allow` value of this route, e.g. `GET, HEAD, POST`.
    fn allow(&self) -> String {
        let Methods::Each(each) = &self.methods else {
            return String::new();
        };
        let mut methods: Vec<&str> = Vec::with_capacity(each.len() + 1);
        for (method, _) in each.iter() {
            methods.push(method.as_str());
            if *method == Method::GET {
                methods.push("HEAD");
            }
        }
        methods.join(", ")
    }
}

/// The router over [`ROUTES`].
#[derive(Debug)]
pub(crate) struct Router {
    inner: matchit::Router<usize>,
}

/// The route a request matched.
#[derive(Debug)]
pub(crate) struct Matched<'a> {
    /// What answers it; `None` when the route does not take the method.
    pub(crate) handler: Option<Handler>,
    /// The `{id}` or `{account_id}` of the path, if it has one.
    pub(crate) id: Option<&'a str>,
    route: &'static Route,
}

impl Matched<'_> {
    /// The 405 for a route that does not take this method, with `Allow`.
    pub(crate) fn method_not_allowed(&self, method: &Method, request_id: &str) -> Response<Body> {
        method_not_allowed(self.route, method, request_id)
    }
}

impl Router {
    /// Builds the router; fails only if the table itself has conflicting
    /// paths (a test builds it, so that never ships).
    pub(crate) fn new() -> Result<Self, matchit::InsertError> {
        let mut inner = matchit::Router::new();
        for (index, route) in ROUTES.iter().enumerate() {
            inner.insert(route.path, index)?;
        }
        Ok(Router { inner })
    }

    /// The route of `path` (normalised), and what answers `method` there.
    pub(crate) fn at<'p>(&self, method: &Method, path: &'p str) -> Option<Matched<'p>> {
        let matched = self.inner.at(path).ok()?;
        let route = ROUTES.get(*matched.value)?;
        let id = matched
            .params
            .get("id")
            .or_else(|| matched.params.get("account_id"));
        Some(Matched {
            handler: route.handler(method),
            id,
            route,
        })
    }

    /// The metrics label of `path`.
    pub(crate) fn label(&self, path: &str) -> RouteLabel {
        self.inner
            .at(path)
            .ok()
            .and_then(|matched| ROUTES.get(*matched.value))
            .map_or(RouteLabel::Ops, |route| route.label)
    }
}

/// 405 `METHOD_NOT_ALLOWED` with the route's `Allow`.
fn method_not_allowed(route: &Route, method: &Method, request_id: &str) -> Response<Body> {
    let allow = route.allow();
    let mut response = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed here; use {allow}"),
    )
    .into_response(request_id);
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(ALLOW, value);
    }
    response
}

/// 404 `NOT_FOUND` for a path no route has.
pub(crate) fn not_found(path: &str, request_id: &str) -> Response<Body> {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no route {path}; see GET /openapi.json for the API"),
    )
    .into_response(request_id)
}

/// The OpenAPI 3.1 document of every route above, as committed: every
/// configuration serves it, but for the plan names (see [`openapi_document`]).
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// The document this server serves: [`OPENAPI_JSON`] with the plans of its
/// configuration as the `enum` of `SetPlanRequest.plan`, so that a client
/// (or a generator such as schemathesis) knows which names `PUT
/// /admin/v1/accounts/{account_id}` takes; any other is 400.
pub fn openapi_document(plan_names: &[&str]) -> String {
    let mut document: serde_json::Value =
        serde_json::from_str(OPENAPI_JSON).expect("the committed OpenAPI document is JSON");
    let plan = &mut document["components"]["schemas"]["SetPlanRequest"]["properties"]["plan"];
    if let Some(plan) = plan.as_object_mut() {
        plan.insert("enum".into(), serde_json::json!(plan_names));
    }
    document.to_string()
}

/// `GET /openapi.json`.
pub(crate) fn openapi_response(document: bytes::Bytes) -> Response<Body> {
    let mut response = Response::new(full(document));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new().expect("the route table has no conflicting paths")
    }

    fn handler(method: Method, path: &str) -> Option<Option<Handler>> {
        router().at(&method, path).map(|matched| matched.handler)
    }

    #[test]
    fn paths_find_their_handlers() {
        assert_eq!(
            handler(Method::GET, "/v1/whoami"),
            Some(Some(Handler::Whoami))
        );
        assert_eq!(
            handler(Method::HEAD, "/v1/whoami"),
            Some(Some(Handler::Whoami))
        );
        assert_eq!(handler(Method::POST, "/v1/whoami"), Some(None));
        for path in ["/v1/monitor", "/v1/a/b/c", "/v1/whoami/x", "/v1/"] {
            assert_eq!(
                handler(Method::POST, path),
                Some(Some(Handler::Gateway)),
                "{path}"
            );
        }
        for path in ["/auth/verify", "/auth/verify/", "/auth/verify/v1/run"] {
            assert_eq!(
                handler(Method::PUT, path),
                Some(Some(Handler::Verify)),
                "{path}"
            );
        }
        assert_eq!(
            handler(Method::PATCH, "/admin/v1/keys/key_1"),
            Some(Some(Handler::Admin(AdminRoute::UpdateKey)))
        );
        for path in [
            "/admin",
            "/admin/",
            "/admin/v1/",
            "/admin/v1/keys/",
            "/admin/v1//keys",
            "/admin/v1/keys/key_1/delete",
            "/admin/v2/keys",
        ] {
            assert_eq!(
                handler(Method::GET, path),
                Some(Some(Handler::Admin(AdminRoute::Unknown))),
                "{path}"
            );
        }
        assert_eq!(handler(Method::GET, "/v10/x"), None);
        assert_eq!(handler(Method::GET, "/v1"), None);
        assert_eq!(handler(Method::GET, "/nope"), None);
    }

    #[test]
    fn ids_come_from_the_path() {
        let router = router();
        let matched = router
            .at(&Method::POST, "/admin/v1/keys/key_9/rotate")
            .unwrap();
        assert_eq!(matched.id, Some("key_9"));
        let matched = router
            .at(&Method::PUT, "/admin/v1/accounts/acct_1")
            .unwrap();
        assert_eq!(matched.id, Some("acct_1"));
    }

    #[test]
    fn method_not_allowed_lists_what_the_route_takes() {
        let router = router();
        let wrong = router.at(&Method::DELETE, "/admin/v1/keys/key_1").unwrap();
        let answer = wrong.method_not_allowed(&Method::DELETE, "r");
        assert_eq!(answer.status(), http::StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.headers()[ALLOW], "GET, HEAD, PATCH");
        let whoami = router.at(&Method::POST, "/v1/whoami").unwrap();
        assert_eq!(
            whoami.method_not_allowed(&Method::POST, "r").headers()[ALLOW],
            "GET, HEAD"
        );
    }

    #[test]
    fn labels_come_from_the_table() {
        let router = router();
        let cases = [
            ("/v1/whoami", RouteLabel::Whoami),
            ("/v1/whoami/x", RouteLabel::Gateway),
            ("/auth/verify", RouteLabel::Verify),
            ("/auth/verify/v1/run", RouteLabel::Verify),
            ("/auth/verifyx", RouteLabel::Ops),
            ("/v1/monitor", RouteLabel::Gateway),
            ("/v10", RouteLabel::Ops),
            ("/admin/v1/keys", RouteLabel::Admin),
            ("/admin/anything", RouteLabel::Admin),
            ("/metrics", RouteLabel::Ops),
            ("/", RouteLabel::Ops),
        ];
        for (path, label) in cases {
            assert_eq!(router.label(path), label, "{path}");
        }
    }
}
