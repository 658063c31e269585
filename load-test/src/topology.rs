//! The simulated microservice shop: services, their pods, their operations and
//! the calls each operation makes.
//!
//! Everything here is built once, up front, so that generating a span only
//! clones pre-built attribute lists and picks among pre-formatted strings.
//! The topology depends only on the number of services (never on the run
//! seed), so two runs with the same `--services` see the same shop.

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Semantic-conventions schema the generated data claims to follow.
pub(crate) const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.34.0";

/// Instrumentation scopes every service has, indexed by `Tmpl::scope`.
pub(crate) const SCOPE_HTTP: u8 = 0;
pub(crate) const SCOPE_GRPC: u8 = 1;
pub(crate) const SCOPE_DB: u8 = 2;
pub(crate) const SCOPE_MSG: u8 = 3;
pub(crate) const SCOPE_APP: u8 = 4;
pub(crate) const NUM_SCOPES: usize = 5;

/// Which status attribute a span carries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusAttr {
    None,
    /// `http.response.status_code` 200 / 500.
    Http,
    /// `rpc.grpc.status_code` 0 / 13.
    Grpc,
}

/// A pre-built span shape: everything that does not change between spans.
pub(crate) struct Tmpl {
    pub name: String,
    pub kind: i32,
    pub scope: u8,
    pub attrs: Vec<KeyValue>,
    pub status: StatusAttr,
    /// Attribute key of the varying path (`url.path` / `url.full`), if any.
    pub path_key: &'static str,
    /// Candidate values for `path_key`; a caller and its callee use the same index.
    pub paths: Vec<String>,
    /// `exception.type` / `exception.message` used when this span fails.
    pub exception: (&'static str, &'static str),
    /// Relative share of the parent's time this span takes.
    pub weight: f64,
    /// Integer attributes drawn per span, uniformly from `lo..=hi`.
    pub ints: Vec<(&'static str, i64, i64)>,
    /// Record gRPC `message` events (SENT / RECEIVED), as the Go and Java
    /// gRPC instrumentations do.
    pub message_events: bool,
}

pub(crate) enum Action {
    /// A leaf span in the calling service (database, cache, internal work, external API).
    Leaf(Tmpl),
    /// A synchronous call: CLIENT span in the caller, then the callee's operation.
    Call {
        client: Tmpl,
        service: usize,
        op: usize,
    },
    /// A Kafka message: PRODUCER span in the caller, CONSUMER operation in `service`.
    Publish {
        producer: Tmpl,
        service: usize,
        op: usize,
    },
}

pub(crate) struct Step {
    pub prob: f64,
    pub min: u8,
    pub max: u8,
    pub action: Action,
}

pub(crate) struct Op {
    /// The SERVER or CONSUMER span that starts this operation.
    pub entry: Tmpl,
    pub steps: Vec<Step>,
}

pub(crate) struct Service {
    pub name: String,
    /// Index of this service's first pod in the flat pod list.
    pub first_instance: usize,
    pub instances: usize,
    pub ops: Vec<Op>,
}

pub(crate) struct Instance {
    pub resource: Resource,
    pub scopes: [InstrumentationScope; NUM_SCOPES],
}

pub(crate) struct Topology {
    pub services: Vec<Service>,
    pub instances: Vec<Instance>,
    /// Pool of `user.id` values put on root spans.
    pub user_ids: Vec<String>,
    pub user_agents: Vec<String>,
    pub client_addrs: Vec<String>,
}

// ---------------------------------------------------------------------------
// Attribute helpers

pub(crate) fn kv_str(key: &str, v: &str) -> KeyValue {
    kv(key, Value::StringValue(v.to_owned()))
}

pub(crate) fn kv_int(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}

pub(crate) fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// Languages: SDK identity and instrumentation scope names.

struct Lang {
    sdk: &'static str,
    sdk_version: &'static str,
    /// (name, version) for http, grpc, db, messaging scopes; the app scope is per service.
    scopes: [(&'static str, &'static str); 4],
    /// Extra per-span attributes this runtime's instrumentation records.
    thread_attrs: bool,
    /// Its gRPC instrumentation records `message` events.
    grpc_events: bool,
}

const GO: usize = 0;
const JAVA: usize = 1;
const NODE: usize = 2;
const PYTHON: usize = 3;
const RUST: usize = 4;

const LANGS: [Lang; 5] = [
    Lang {
        sdk: "go",
        sdk_version: "1.38.0",
        scopes: [
            (
                "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
                "0.63.0",
            ),
            (
                "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
                "0.63.0",
            ),
            ("github.com/XSAM/otelsql", "0.40.0"),
            ("github.com/IBM/sarama/otelsarama", "0.14.0"),
        ],
        thread_attrs: false,
        grpc_events: true,
    },
    Lang {
        sdk: "java",
        sdk_version: "1.54.1",
        scopes: [
            ("io.opentelemetry.tomcat-10.0", "2.20.1-alpha"),
            ("io.opentelemetry.grpc-1.6", "2.20.1-alpha"),
            ("io.opentelemetry.jdbc", "2.20.1-alpha"),
            ("io.opentelemetry.kafka-clients-2.6", "2.20.1-alpha"),
        ],
        thread_attrs: true,
        grpc_events: true,
    },
    Lang {
        sdk: "nodejs",
        sdk_version: "2.1.0",
        scopes: [
            ("@opentelemetry/instrumentation-http", "0.205.0"),
            ("@opentelemetry/instrumentation-grpc", "0.205.0"),
            ("@opentelemetry/instrumentation-pg", "0.58.0"),
            ("@opentelemetry/instrumentation-kafkajs", "0.14.0"),
        ],
        thread_attrs: false,
        grpc_events: false,
    },
    Lang {
        sdk: "python",
        sdk_version: "1.37.0",
        scopes: [
            ("opentelemetry.instrumentation.flask", "0.58b0"),
            ("opentelemetry.instrumentation.grpc", "0.58b0"),
            ("opentelemetry.instrumentation.psycopg", "0.58b0"),
            ("opentelemetry.instrumentation.kafka", "0.58b0"),
        ],
        thread_attrs: true,
        grpc_events: false,
    },
    Lang {
        sdk: "rust",
        sdk_version: "0.31.0",
        scopes: [
            ("axum-tracing-opentelemetry", "0.29.0"),
            ("tonic-tracing-opentelemetry", "0.29.0"),
            ("sqlx", "0.8.6"),
            ("rdkafka", "0.38.0"),
        ],
        thread_attrs: false,
        grpc_events: false,
    },
];

// ---------------------------------------------------------------------------
// Declarative description of the hand-written shop.

enum EntryDef<'a> {
    Http { method: &'a str, route: &'a str },
    Grpc { service: &'a str, method: &'a str },
    Consume { topic: &'a str, group: &'a str },
}

enum StepDef {
    /// Call `op` of service `target` (by name); the protocol follows the callee's entry.
    Call(f64, &'static str, usize),
    Sql {
        prob: f64,
        repeat: (u8, u8),
        op: &'static str,
        table: &'static str,
        query: &'static str,
    },
    Redis {
        prob: f64,
        repeat: (u8, u8),
        cmd: &'static str,
        query: &'static str,
    },
    Internal(f64, &'static str, &'static str),
    Publish(f64, &'static str, &'static str),
    External {
        prob: f64,
        method: &'static str,
        host: &'static str,
        path: &'static str,
    },
}

struct OpDef {
    entry: EntryDef<'static>,
    steps: Vec<StepDef>,
}

struct ServiceDef {
    name: &'static str,
    lang: usize,
    version: &'static str,
    instances: usize,
    port: i64,
    ops: Vec<OpDef>,
}

fn http(method: &'static str, route: &'static str, steps: Vec<StepDef>) -> OpDef {
    OpDef {
        entry: EntryDef::Http { method, route },
        steps,
    }
}

fn grpc(service: &'static str, method: &'static str, steps: Vec<StepDef>) -> OpDef {
    OpDef {
        entry: EntryDef::Grpc { service, method },
        steps,
    }
}

fn sql(
    prob: f64,
    repeat: (u8, u8),
    op: &'static str,
    table: &'static str,
    query: &'static str,
) -> StepDef {
    StepDef::Sql {
        prob,
        repeat,
        op,
        table,
        query,
    }
}

fn redis(prob: f64, cmd: &'static str, query: &'static str) -> StepDef {
    StepDef::Redis {
        prob,
        repeat: (1, 1),
        cmd,
        query,
    }
}

/// The hand-written part of the shop, in the order `--services` admits them.
fn base_defs() -> Vec<ServiceDef> {
    use StepDef::{Call, Internal, Publish};
    vec![
        ServiceDef {
            name: "frontend",
            lang: NODE,
            version: "2.14.0",
            instances: 3,
            port: 8080,
            ops: vec![
                http(
                    "GET",
                    "/",
                    vec![
                        Call(1.0, "api-gateway", 0),
                        Call(0.7, "api-gateway", 2),
                        Call(0.6, "api-gateway", 6),
                        Internal(1.0, "render home", "renderHome"),
                    ],
                ),
                http(
                    "GET",
                    "/product/{id}",
                    vec![
                        Call(1.0, "api-gateway", 1),
                        Call(0.8, "api-gateway", 2),
                        Call(0.5, "api-gateway", 3),
                        Internal(1.0, "render product", "renderProduct"),
                    ],
                ),
                http(
                    "GET",
                    "/cart",
                    vec![
                        Call(1.0, "api-gateway", 3),
                        Call(0.4, "api-gateway", 2),
                        Internal(1.0, "render cart", "renderCart"),
                    ],
                ),
                http("POST", "/cart", vec![Call(1.0, "api-gateway", 4)]),
                http(
                    "POST",
                    "/cart/checkout",
                    vec![
                        Call(1.0, "api-gateway", 5),
                        Internal(1.0, "render confirmation", "renderConfirmation"),
                    ],
                ),
            ],
        },
        ServiceDef {
            name: "api-gateway",
            lang: GO,
            version: "1.9.3",
            instances: 2,
            port: 8081,
            ops: vec![
                http(
                    "GET",
                    "/api/products",
                    vec![
                        Internal(0.6, "authenticate", "auth.Verify"),
                        redis(0.3, "INCR", "INCR ratelimit:?"),
                        Call(1.0, "catalog", 0),
                    ],
                ),
                http(
                    "GET",
                    "/api/products/{id}",
                    vec![
                        Internal(0.6, "authenticate", "auth.Verify"),
                        Call(1.0, "catalog", 1),
                    ],
                ),
                http(
                    "GET",
                    "/api/recommendations",
                    vec![
                        Internal(0.6, "authenticate", "auth.Verify"),
                        Call(1.0, "recommendation", 0),
                    ],
                ),
                http(
                    "GET",
                    "/api/cart",
                    vec![
                        Internal(1.0, "authenticate", "auth.Verify"),
                        Call(1.0, "cart", 0),
                    ],
                ),
                http(
                    "POST",
                    "/api/cart",
                    vec![
                        Internal(1.0, "authenticate", "auth.Verify"),
                        Call(1.0, "cart", 1),
                    ],
                ),
                http(
                    "POST",
                    "/api/checkout",
                    vec![
                        Internal(1.0, "authenticate", "auth.Verify"),
                        redis(0.3, "INCR", "INCR ratelimit:?"),
                        Call(1.0, "checkout", 0),
                    ],
                ),
                http("GET", "/api/ads", vec![Call(1.0, "ad", 0)]),
            ],
        },
        ServiceDef {
            name: "checkout",
            lang: GO,
            version: "3.2.1",
            instances: 2,
            port: 5050,
            ops: vec![grpc(
                "shop.CheckoutService",
                "PlaceOrder",
                vec![
                    Call(1.0, "cart", 0),
                    Internal(1.0, "prepare order", "checkout.prepareOrderItems"),
                    StepDef::Call(0.8, "currency", 0),
                    Call(1.0, "inventory", 0),
                    Call(0.9, "shipping", 0),
                    Call(1.0, "payment", 0),
                    sql(
                        1.0,
                        (1, 1),
                        "INSERT",
                        "orders",
                        "INSERT INTO orders (id, user_id, total_cents, currency, created_at) VALUES ($1, $2, $3, $4, now())",
                    ),
                    Call(1.0, "cart", 2),
                    Publish(1.0, "orders", "notifications"),
                ],
            )],
        },
        ServiceDef {
            name: "payment",
            lang: JAVA,
            version: "1.12.0",
            instances: 2,
            port: 50051,
            ops: vec![grpc(
                "shop.PaymentService",
                "Charge",
                vec![
                    Internal(1.0, "validate card", "PaymentService.validateCard"),
                    StepDef::External {
                        prob: 1.0,
                        method: "POST",
                        host: "api.payments-provider.example",
                        path: "/v1/charges",
                    },
                    sql(
                        1.0,
                        (1, 1),
                        "INSERT",
                        "payments",
                        "INSERT INTO payments (id, order_id, amount_cents, status) VALUES (?, ?, ?, ?)",
                    ),
                ],
            )],
        },
        ServiceDef {
            name: "inventory",
            lang: JAVA,
            version: "2.4.7",
            instances: 2,
            port: 50052,
            ops: vec![grpc(
                "shop.InventoryService",
                "ReserveStock",
                vec![
                    sql(
                        1.0,
                        (1, 3),
                        "SELECT",
                        "stock",
                        "SELECT product_id, quantity FROM stock WHERE product_id = ? FOR UPDATE",
                    ),
                    sql(
                        1.0,
                        (1, 1),
                        "UPDATE",
                        "stock",
                        "UPDATE stock SET quantity = quantity - ? WHERE product_id = ?",
                    ),
                ],
            )],
        },
        ServiceDef {
            name: "cart",
            lang: RUST,
            version: "0.9.2",
            instances: 2,
            port: 7070,
            ops: vec![
                grpc(
                    "shop.CartService",
                    "GetCart",
                    vec![redis(1.0, "HGETALL", "HGETALL cart:?")],
                ),
                grpc(
                    "shop.CartService",
                    "AddItem",
                    vec![
                        redis(1.0, "HSET", "HSET cart:? ? ?"),
                        redis(1.0, "EXPIRE", "EXPIRE cart:? 86400"),
                    ],
                ),
                grpc(
                    "shop.CartService",
                    "EmptyCart",
                    vec![redis(1.0, "DEL", "DEL cart:?")],
                ),
            ],
        },
        ServiceDef {
            name: "catalog",
            lang: GO,
            version: "1.21.4",
            instances: 2,
            port: 3550,
            ops: vec![
                grpc(
                    "shop.CatalogService",
                    "ListProducts",
                    vec![
                        redis(0.5, "GET", "GET catalog:products:page:?"),
                        sql(
                            1.0,
                            (1, 1),
                            "SELECT",
                            "products",
                            "SELECT id, name, description, price_cents, categories FROM products ORDER BY popularity DESC LIMIT $1 OFFSET $2",
                        ),
                    ],
                ),
                grpc(
                    "shop.CatalogService",
                    "GetProduct",
                    vec![
                        redis(1.0, "GET", "GET catalog:product:?"),
                        sql(
                            0.4,
                            (1, 1),
                            "SELECT",
                            "products",
                            "SELECT id, name, description, price_cents, categories FROM products WHERE id = $1",
                        ),
                    ],
                ),
            ],
        },
        ServiceDef {
            name: "notifications",
            lang: PYTHON,
            version: "1.3.0",
            instances: 2,
            port: 8000,
            ops: vec![OpDef {
                entry: EntryDef::Consume {
                    topic: "orders",
                    group: "notifications",
                },
                steps: vec![
                    Internal(1.0, "render email", "notifications.render_order_email"),
                    StepDef::External {
                        prob: 1.0,
                        method: "POST",
                        host: "api.mail-provider.example",
                        path: "/v3/mail/send",
                    },
                    sql(
                        0.5,
                        (1, 1),
                        "INSERT",
                        "notifications",
                        "INSERT INTO notifications (order_id, channel, sent_at) VALUES (%s, %s, now())",
                    ),
                ],
            }],
        },
        ServiceDef {
            name: "recommendation",
            lang: PYTHON,
            version: "0.18.1",
            instances: 2,
            port: 9001,
            ops: vec![grpc(
                "shop.RecommendationService",
                "ListRecommendations",
                vec![
                    redis(0.5, "GET", "GET reco:user:?"),
                    StepDef::Call(1.0, "catalog", 0),
                    Internal(1.0, "rank products", "recommendation.rank"),
                ],
            )],
        },
        ServiceDef {
            name: "shipping",
            lang: RUST,
            version: "1.0.4",
            instances: 2,
            port: 50053,
            ops: vec![grpc(
                "shop.ShippingService",
                "GetQuote",
                vec![Internal(1.0, "compute quote", "shipping::quote::compute")],
            )],
        },
        ServiceDef {
            name: "currency",
            lang: NODE,
            version: "1.1.0",
            instances: 2,
            port: 7001,
            ops: vec![grpc(
                "shop.CurrencyService",
                "Convert",
                vec![
                    Internal(0.3, "load rates", "loadRates"),
                    redis(0.5, "GET", "GET fx:rates:?"),
                ],
            )],
        },
        ServiceDef {
            name: "ad",
            lang: JAVA,
            version: "1.6.2",
            instances: 2,
            port: 9555,
            ops: vec![grpc(
                "shop.AdService",
                "GetAds",
                vec![
                    Internal(1.0, "select ads", "AdService.selectAds"),
                    redis(0.5, "GET", "GET ads:category:?"),
                ],
            )],
        },
    ]
}

/// Services that generic extra services may hang off.
const MID_TIER: [&str; 9] = [
    "checkout",
    "payment",
    "inventory",
    "cart",
    "catalog",
    "recommendation",
    "shipping",
    "currency",
    "ad",
];

// ---------------------------------------------------------------------------
// Building

const PRODUCT_IDS: [&str; 12] = [
    "OLJCESPC7Z",
    "66VCHSJNUP",
    "1YMWWN1N4O",
    "L9ECAV7KIM",
    "2ZYFJ3GM2N",
    "0PUK6V6EV0",
    "LS4PSXUNUM",
    "9SIQT8TOJO",
    "6E92ZMYYFZ",
    "HQTGWGPNH4",
    "OLJCESPC7Y",
    "2ZYFJ3GM2M",
];

const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
];

/// Domain attributes some gRPC operations record on their SERVER span.
fn business_ints(service: &str, method: &str) -> Vec<(&'static str, i64, i64)> {
    let mut ints = vec![("network.peer.port", 32768, 60999)];
    match (service, method) {
        ("shop.CheckoutService", "PlaceOrder") => {
            ints.push(("app.order.items.count", 1, 8));
            ints.push(("app.order.total_cents", 500, 60_000));
        }
        ("shop.CartService", _) => ints.push(("app.cart.items.count", 0, 12)),
        ("shop.CatalogService", "ListProducts") => ints.push(("app.products.count", 10, 40)),
        ("shop.PaymentService", "Charge") => ints.push(("app.payment.amount_cents", 500, 60_000)),
        _ => {}
    }
    ints
}

/// Concrete request paths for a route: `{id}` is replaced by product ids.
fn expand_route(route: &str) -> Vec<String> {
    if route.contains("{id}") {
        PRODUCT_IDS
            .iter()
            .map(|id| route.replace("{id}", id))
            .collect()
    } else {
        vec![route.to_owned()]
    }
}

fn random_hex(rng: &mut SmallRng, len: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..len)
        .map(|_| HEX[rng.random_range(0..16)] as char)
        .collect()
}

fn random_alnum(rng: &mut SmallRng, len: usize) -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

struct Builder<'a> {
    rng: SmallRng,
    /// Names of the admitted services, in index order.
    names: Vec<String>,
    langs: Vec<usize>,
    ports: Vec<i64>,
    defs: &'a [ServiceDef],
}

impl Builder<'_> {
    fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    fn thread_attrs(&mut self, lang: usize, attrs: &mut Vec<KeyValue>) {
        if LANGS[lang].thread_attrs {
            let n = self.rng.random_range(1..=16);
            attrs.push(kv_str("thread.name", &format!("worker-pool-1-thread-{n}")));
            attrs.push(kv_int("thread.id", 20 + n));
        }
    }

    /// The SERVER (or CONSUMER) span of an operation.
    fn entry_tmpl(&mut self, svc: usize, entry: &EntryDef<'_>) -> Tmpl {
        let lang = self.langs[svc];
        let host = self.names[svc].clone();
        let port = self.ports[svc];
        let mut attrs = Vec::with_capacity(12);
        match *entry {
            EntryDef::Http { method, route } => {
                attrs.push(kv_str("http.request.method", method));
                attrs.push(kv_str("http.route", route));
                attrs.push(kv_str("url.scheme", "http"));
                attrs.push(kv_str("server.address", &host));
                attrs.push(kv_int("server.port", port));
                attrs.push(kv_str("network.protocol.version", "1.1"));
                attrs.push(kv_str("network.peer.address", &self.pod_ip()));
                self.thread_attrs(lang, &mut attrs);
                let mut ints = vec![
                    ("network.peer.port", 32768, 60999),
                    ("http.response.body.size", 200, 40_000),
                ];
                if method == "POST" {
                    ints.push(("http.request.body.size", 60, 4_000));
                }
                Tmpl {
                    name: format!("{method} {route}"),
                    kind: SpanKind::Server as i32,
                    scope: SCOPE_HTTP,
                    attrs,
                    status: StatusAttr::Http,
                    path_key: "url.path",
                    paths: expand_route(route),
                    exception: (
                        "HttpError",
                        "Internal Server Error: upstream request failed",
                    ),
                    weight: 1.0,
                    message_events: false,
                    ints,
                }
            }
            EntryDef::Grpc { service, method } => {
                attrs.push(kv_str("rpc.system", "grpc"));
                attrs.push(kv_str("rpc.service", service));
                attrs.push(kv_str("rpc.method", method));
                attrs.push(kv_str("server.address", &host));
                attrs.push(kv_int("server.port", port));
                attrs.push(kv_str("network.peer.address", &self.pod_ip()));
                self.thread_attrs(lang, &mut attrs);
                Tmpl {
                    name: format!("{service}/{method}"),
                    kind: SpanKind::Server as i32,
                    scope: SCOPE_GRPC,
                    message_events: LANGS[lang].grpc_events,
                    attrs,
                    status: StatusAttr::Grpc,
                    path_key: "",
                    paths: Vec::new(),
                    exception: ("RpcError", "INTERNAL: downstream dependency failed"),
                    weight: 1.0,
                    ints: business_ints(service, method),
                }
            }
            EntryDef::Consume { topic, group } => {
                attrs.push(kv_str("messaging.system", "kafka"));
                attrs.push(kv_str("messaging.operation.type", "process"));
                attrs.push(kv_str("messaging.operation.name", "process"));
                attrs.push(kv_str("messaging.destination.name", topic));
                attrs.push(kv_str("messaging.consumer.group.name", group));
                attrs.push(kv_str("messaging.destination.partition.id", "3"));
                attrs.push(kv_str("server.address", "kafka-0.kafka.shop.svc"));
                self.thread_attrs(lang, &mut attrs);
                Tmpl {
                    name: format!("process {topic}"),
                    kind: SpanKind::Consumer as i32,
                    scope: SCOPE_MSG,
                    attrs,
                    status: StatusAttr::None,
                    path_key: "",
                    paths: Vec::new(),
                    exception: ("ProcessingError", "failed to process message"),
                    weight: 1.0,
                    message_events: false,
                    ints: vec![
                        ("messaging.kafka.offset", 1_000_000, 90_000_000),
                        ("messaging.message.body.size", 300, 3_000),
                    ],
                }
            }
        }
    }

    fn pod_ip(&mut self) -> String {
        format!(
            "10.42.{}.{}",
            self.rng.random_range(0..8),
            self.rng.random_range(2..250)
        )
    }

    /// The CLIENT span a caller records when invoking `callee`'s operation `op`.
    fn client_tmpl(&mut self, caller: usize, callee: usize, op: usize) -> Tmpl {
        let lang = self.langs[caller];
        let host = self.names[callee].clone();
        let port = self.ports[callee];
        let def = &self.defs[callee].ops[op];
        let mut attrs = Vec::with_capacity(12);
        match def.entry {
            EntryDef::Http { method, route } => {
                attrs.push(kv_str("http.request.method", method));
                attrs.push(kv_str("server.address", &host));
                attrs.push(kv_int("server.port", port));
                attrs.push(kv_str("peer.service", &host));
                attrs.push(kv_str("network.protocol.version", "1.1"));
                attrs.push(kv_str("network.peer.address", &self.pod_ip()));
                self.thread_attrs(lang, &mut attrs);
                let paths = expand_route(route)
                    .into_iter()
                    .map(|p| format!("http://{host}:{port}{p}"))
                    .collect();
                Tmpl {
                    name: method.to_owned(),
                    kind: SpanKind::Client as i32,
                    scope: SCOPE_HTTP,
                    attrs,
                    status: StatusAttr::Http,
                    path_key: "url.full",
                    paths,
                    exception: ("HttpError", "upstream responded 500 Internal Server Error"),
                    weight: 1.0,
                    message_events: false,
                    ints: vec![("http.response.body.size", 200, 40_000)],
                }
            }
            EntryDef::Grpc { service, method } => {
                attrs.push(kv_str("rpc.system", "grpc"));
                attrs.push(kv_str("rpc.service", service));
                attrs.push(kv_str("rpc.method", method));
                attrs.push(kv_str("server.address", &host));
                attrs.push(kv_int("server.port", port));
                attrs.push(kv_str("peer.service", &host));
                attrs.push(kv_str("network.peer.address", &self.pod_ip()));
                self.thread_attrs(lang, &mut attrs);
                Tmpl {
                    name: format!("{service}/{method}"),
                    kind: SpanKind::Client as i32,
                    scope: SCOPE_GRPC,
                    message_events: LANGS[lang].grpc_events,
                    attrs,
                    status: StatusAttr::Grpc,
                    path_key: "",
                    paths: Vec::new(),
                    exception: ("RpcError", "INTERNAL: upstream returned an error"),
                    weight: 1.0,
                    ints: Vec::new(),
                }
            }
            // Consumers are reached through `Publish`, never called directly.
            EntryDef::Consume { .. } => self.internal_tmpl(caller, "call", "call"),
        }
    }

    fn internal_tmpl(&mut self, svc: usize, name: &str, func: &str) -> Tmpl {
        let mut attrs = Vec::with_capacity(4);
        attrs.push(kv_str("code.function.name", func));
        attrs.push(kv_str(
            "code.file.path",
            &format!("src/{}/handler", self.names[svc]),
        ));
        attrs.push(kv_int("code.line.number", self.rng.random_range(40..900)));
        self.thread_attrs(self.langs[svc], &mut attrs);
        Tmpl {
            name: name.to_owned(),
            kind: SpanKind::Internal as i32,
            scope: SCOPE_APP,
            attrs,
            status: StatusAttr::None,
            path_key: "",
            paths: Vec::new(),
            exception: (
                "IllegalStateException",
                "invariant violated while processing request",
            ),
            weight: 0.6,
            message_events: false,
            ints: Vec::new(),
        }
    }

    fn step(&mut self, svc: usize, def: &StepDef) -> Option<Step> {
        let lang = self.langs[svc];
        let (prob, (min, max), action) = match *def {
            StepDef::Call(prob, target, op) => {
                let callee = self.index_of(target)?;
                let client = self.client_tmpl(svc, callee, op);
                (
                    prob,
                    (1, 1),
                    Action::Call {
                        client,
                        service: callee,
                        op,
                    },
                )
            }
            StepDef::Publish(prob, topic, consumer) => {
                let service = self.index_of(consumer)?;
                let mut attrs = Vec::with_capacity(10);
                attrs.push(kv_str("messaging.system", "kafka"));
                attrs.push(kv_str("messaging.operation.type", "send"));
                attrs.push(kv_str("messaging.operation.name", "send"));
                attrs.push(kv_str("messaging.destination.name", topic));
                attrs.push(kv_str("server.address", "kafka-0.kafka.shop.svc"));
                attrs.push(kv_int("server.port", 9092));
                attrs.push(kv_str("peer.service", "kafka"));
                self.thread_attrs(lang, &mut attrs);
                let producer = Tmpl {
                    name: format!("publish {topic}"),
                    kind: SpanKind::Producer as i32,
                    scope: SCOPE_MSG,
                    attrs,
                    status: StatusAttr::None,
                    path_key: "",
                    paths: Vec::new(),
                    exception: (
                        "KafkaTimeoutError",
                        "Expiring 1 record(s): 30000 ms has passed since batch creation",
                    ),
                    weight: 0.4,
                    message_events: false,
                    ints: vec![("messaging.message.body.size", 300, 3_000)],
                };
                (
                    prob,
                    (1, 1),
                    Action::Publish {
                        producer,
                        service,
                        op: 0,
                    },
                )
            }
            StepDef::Sql {
                prob,
                repeat,
                op,
                table,
                query,
            } => {
                let mut attrs = Vec::with_capacity(10);
                attrs.push(kv_str("db.system.name", "postgresql"));
                attrs.push(kv_str("db.namespace", "shop"));
                attrs.push(kv_str("db.operation.name", op));
                attrs.push(kv_str("db.collection.name", table));
                attrs.push(kv_str("db.query.text", query));
                attrs.push(kv_str("server.address", "postgres.shop.svc"));
                attrs.push(kv_int("server.port", 5432));
                attrs.push(kv_str("peer.service", "postgres"));
                attrs.push(kv_str("network.peer.address", "10.43.12.7"));
                self.thread_attrs(lang, &mut attrs);
                let tmpl = Tmpl {
                    name: format!("{op} shop.{table}"),
                    kind: SpanKind::Client as i32,
                    scope: SCOPE_DB,
                    attrs,
                    status: StatusAttr::None,
                    path_key: "",
                    paths: Vec::new(),
                    exception: ("PSQLException", "ERROR: deadlock detected"),
                    weight: 0.5,
                    message_events: false,
                    ints: vec![if op == "SELECT" {
                        ("db.response.returned_rows", 0, 50)
                    } else {
                        ("db.response.returned_rows", 1, 3)
                    }],
                };
                (prob, repeat, Action::Leaf(tmpl))
            }
            StepDef::Redis {
                prob,
                repeat,
                cmd,
                query,
            } => {
                let mut attrs = Vec::with_capacity(8);
                attrs.push(kv_str("db.system.name", "redis"));
                attrs.push(kv_str("db.operation.name", cmd));
                attrs.push(kv_str("db.query.text", query));
                attrs.push(kv_str("db.namespace", "0"));
                attrs.push(kv_str("server.address", "redis-master.shop.svc"));
                attrs.push(kv_int("server.port", 6379));
                attrs.push(kv_str("peer.service", "redis"));
                attrs.push(kv_str("network.peer.address", "10.43.9.21"));
                self.thread_attrs(lang, &mut attrs);
                let tmpl = Tmpl {
                    name: cmd.to_owned(),
                    kind: SpanKind::Client as i32,
                    scope: SCOPE_DB,
                    attrs,
                    status: StatusAttr::None,
                    path_key: "",
                    paths: Vec::new(),
                    exception: ("RedisTimeoutError", "Timeout reading from socket"),
                    weight: 0.15,
                    message_events: false,
                    ints: Vec::new(),
                };
                (prob, repeat, Action::Leaf(tmpl))
            }
            StepDef::Internal(prob, name, func) => (
                prob,
                (1, 1),
                Action::Leaf(self.internal_tmpl(svc, name, func)),
            ),
            StepDef::External {
                prob,
                method,
                host,
                path,
            } => {
                let mut attrs = Vec::with_capacity(8);
                attrs.push(kv_str("http.request.method", method));
                attrs.push(kv_str("url.full", &format!("https://{host}{path}")));
                attrs.push(kv_str("server.address", host));
                attrs.push(kv_int("server.port", 443));
                attrs.push(kv_str("network.protocol.version", "1.1"));
                self.thread_attrs(lang, &mut attrs);
                let tmpl = Tmpl {
                    name: method.to_owned(),
                    kind: SpanKind::Client as i32,
                    scope: SCOPE_HTTP,
                    attrs,
                    status: StatusAttr::Http,
                    path_key: "",
                    paths: Vec::new(),
                    exception: ("HttpError", "provider responded 500 Internal Server Error"),
                    weight: 1.2,
                    message_events: false,
                    ints: vec![("http.response.body.size", 100, 2_000)],
                };
                (prob, (1, 1), Action::Leaf(tmpl))
            }
        };
        Some(Step {
            prob,
            min,
            max: max.max(min),
            action,
        })
    }

    fn resource(&mut self, svc: usize, version: &str) -> Resource {
        let name = &self.names[svc];
        let lang = &LANGS[self.langs[svc]];
        let pod = format!(
            "{name}-{}-{}",
            random_alnum(&mut self.rng, 9),
            random_alnum(&mut self.rng, 5)
        );
        let node = format!(
            "ip-10-0-{}-{}.eu-west-1.compute.internal",
            self.rng.random_range(0..64),
            self.rng.random_range(1..255)
        );
        let instance_id = format!(
            "{}-{}-{}-{}-{}",
            random_hex(&mut self.rng, 8),
            random_hex(&mut self.rng, 4),
            random_hex(&mut self.rng, 4),
            random_hex(&mut self.rng, 4),
            random_hex(&mut self.rng, 12)
        );
        let attributes = vec![
            kv_str("service.name", name),
            kv_str("service.namespace", "shop"),
            kv_str("service.version", version),
            kv_str("service.instance.id", &instance_id),
            kv_str("deployment.environment.name", "production"),
            kv_str("telemetry.sdk.name", "opentelemetry"),
            kv_str("telemetry.sdk.language", lang.sdk),
            kv_str("telemetry.sdk.version", lang.sdk_version),
            kv_str("host.name", &pod),
            kv_str("host.arch", "amd64"),
            kv_str("os.type", "linux"),
            kv_str("k8s.cluster.name", "prod-eu-west-1"),
            kv_str("k8s.namespace.name", "shop"),
            kv_str("k8s.deployment.name", name),
            kv_str("k8s.pod.name", &pod),
            kv_str("k8s.node.name", &node),
            kv_str("cloud.provider", "aws"),
            kv_str("cloud.region", "eu-west-1"),
        ];
        Resource {
            attributes,
            ..Default::default()
        }
    }

    fn scopes(&self, svc: usize, version: &str) -> [InstrumentationScope; NUM_SCOPES] {
        let lang = &LANGS[self.langs[svc]];
        let scope = |(name, version): (&str, &str)| InstrumentationScope {
            name: name.to_owned(),
            version: version.to_owned(),
            ..Default::default()
        };
        [
            scope(lang.scopes[0]),
            scope(lang.scopes[1]),
            scope(lang.scopes[2]),
            scope(lang.scopes[3]),
            InstrumentationScope {
                name: format!("shop.{}", self.names[svc]),
                version: version.to_owned(),
                ..Default::default()
            },
        ]
    }
}

impl Topology {
    /// Builds a shop with `services` services (at least 1).
    ///
    /// The first 12 are hand-written (frontend, api-gateway,
    /// checkout, payment, inventory, cart, catalog, notifications,
    /// recommendation, shipping, currency, ad); calls to services that were
    /// not admitted are dropped. Beyond that, generic gRPC services
    /// `svc-NNN` are hung off mid-tier services (and off each other), each
    /// optionally using postgres or redis.
    pub(crate) fn new(services: usize) -> Self {
        let services = services.max(1);
        let mut defs = base_defs();
        defs.truncate(services);
        let mut rng = SmallRng::seed_from_u64(0x00c0_ffee_5eed ^ services as u64);

        let mut names: Vec<String> = defs.iter().map(|d| d.name.to_owned()).collect();
        let mut langs: Vec<usize> = defs.iter().map(|d| d.lang).collect();
        let mut ports: Vec<i64> = defs.iter().map(|d| d.port).collect();
        for i in defs.len()..services {
            names.push(format!("svc-{i:03}"));
            langs.push(i % LANGS.len());
            ports.push(50_000 + i as i64);
        }

        let mut builder = Builder {
            rng: SmallRng::seed_from_u64(rng.random()),
            names,
            langs,
            ports,
            defs: &defs,
        };

        let mut out = Vec::with_capacity(services);
        let mut instances = Vec::new();
        for (svc, def) in defs.iter().enumerate() {
            let ops = def
                .ops
                .iter()
                .map(|op| Op {
                    entry: builder.entry_tmpl(svc, &op.entry),
                    steps: op
                        .steps
                        .iter()
                        .filter_map(|s| builder.step(svc, s))
                        .collect(),
                })
                .collect();
            out.push(Service {
                name: def.name.to_owned(),
                first_instance: instances.len(),
                instances: def.instances,
                ops,
            });
            for _ in 0..def.instances {
                instances.push(Instance {
                    resource: builder.resource(svc, def.version),
                    scopes: builder.scopes(svc, def.version),
                });
            }
        }

        // Generic services beyond the hand-written shop.
        let mut extra_children: Vec<Vec<(usize, usize)>> = vec![Vec::new(); services];
        for svc in defs.len()..services {
            let name = builder.names[svc].clone();
            let rpc_service = format!("shop.{}Service", name.replace('-', ""));
            let entry_def = EntryDef::Grpc {
                service: &rpc_service,
                method: "Handle",
            };
            let entry = builder.entry_tmpl(svc, &entry_def);
            let mut steps = Vec::new();
            let storage = rng.random_range(0..3);
            if storage == 0 {
                let query = "SELECT id, payload, updated_at FROM items WHERE tenant_id = $1 AND id = ANY($2)";
                steps.extend(builder.step(svc, &sql(0.8, (1, 2), "SELECT", "items", query)));
            } else if storage == 1 {
                steps.extend(builder.step(svc, &redis(0.8, "GET", "GET item:?")));
            }
            steps.extend(builder.step(
                svc,
                &StepDef::Internal(0.7, "process request", "handler.process"),
            ));
            out.push(Service {
                name: name.clone(),
                first_instance: instances.len(),
                instances: 2,
                ops: vec![Op { entry, steps }],
            });
            let version = format!("1.{}.{}", svc % 7, svc % 13);
            for _ in 0..2 {
                instances.push(Instance {
                    resource: builder.resource(svc, &version),
                    scopes: builder.scopes(svc, &version),
                });
            }

            // Pick a parent among admitted mid-tier services and earlier extras.
            let mut candidates: Vec<usize> = MID_TIER
                .iter()
                .filter_map(|n| builder.index_of(n))
                .collect();
            candidates.extend(defs.len()..svc);
            if candidates.is_empty() {
                // Tiny shop: hang off the last hand-written service.
                candidates.push(defs.len() - 1);
            }
            let parent = candidates[rng.random_range(0..candidates.len())];
            let parent_op = rng.random_range(0..out[parent].ops.len());
            extra_children[parent].push((parent_op, svc));
        }
        for (parent, children) in extra_children.iter().enumerate() {
            let per_op = |op: usize| children.iter().filter(|(o, _)| *o == op).count();
            for &(op, child) in children {
                // Keep the expected fan-out to extra services around two per operation.
                let prob = (2.0 / per_op(op) as f64).min(0.8);
                let client = builder.client_tmpl_generic(parent, child, &out[child]);
                out[parent].ops[op].steps.push(Step {
                    prob,
                    min: 1,
                    max: 1,
                    action: Action::Call {
                        client,
                        service: child,
                        op: 0,
                    },
                });
            }
        }

        let user_ids = (0..2048)
            .map(|i| format!("user-{:06}", i * 7919 % 1_000_000))
            .collect();
        let client_addrs = (0..256)
            .map(|_| {
                format!(
                    "{}.{}.{}.{}",
                    rng.random_range(11..223),
                    rng.random_range(0..256),
                    rng.random_range(0..256),
                    rng.random_range(1..255)
                )
            })
            .collect();
        Topology {
            services: out,
            instances,
            user_ids,
            user_agents: USER_AGENTS.iter().map(|s| (*s).to_owned()).collect(),
            client_addrs,
        }
    }
}

impl Builder<'_> {
    /// CLIENT span for a call to a generic (extra) service.
    fn client_tmpl_generic(&mut self, caller: usize, callee: usize, callee_svc: &Service) -> Tmpl {
        let lang = self.langs[caller];
        let host = self.names[callee].clone();
        let port = self.ports[callee];
        let entry = &callee_svc.ops[0].entry;
        let (rpc_service, method) = entry
            .name
            .split_once('/')
            .unwrap_or((&entry.name, "Handle"));
        let mut attrs = Vec::with_capacity(10);
        attrs.push(kv_str("rpc.system", "grpc"));
        attrs.push(kv_str("rpc.service", rpc_service));
        attrs.push(kv_str("rpc.method", method));
        attrs.push(kv_str("server.address", &host));
        attrs.push(kv_int("server.port", port));
        attrs.push(kv_str("peer.service", &host));
        attrs.push(kv_str("network.peer.address", &self.pod_ip()));
        self.thread_attrs(lang, &mut attrs);
        Tmpl {
            name: entry.name.clone(),
            kind: SpanKind::Client as i32,
            scope: SCOPE_GRPC,
            message_events: LANGS[lang].grpc_events,
            attrs,
            status: StatusAttr::Grpc,
            path_key: "",
            paths: Vec::new(),
            exception: ("RpcError", "INTERNAL: upstream returned an error"),
            weight: 1.0,
            ints: Vec::new(),
        }
    }
}
