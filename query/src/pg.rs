//! The Postgres wire protocol front end: `psql`, BI tools and Postgres drivers talk to
//! Weft's SQL through it. Every statement runs through the same read-only, time- and
//! memory-bounded path as `POST /api/v1/sql`.
//!
//! ```text
//!  TCP :5433 ─> pgwire (startup, simple + extended query protocol, cancel requests)
//!      │ startup: no authentication (the listener defaults to loopback), no TLS
//!      ▼
//!  classify(statement)                         (DataFusion's parser, generic dialect)
//!      ├─ SELECT / WITH / VALUES / EXPLAIN / SHOW <datafusion setting>
//!      │      ─> QueryService::sql ─────────────────────┐  same SQLOptions, timeout,
//!      │      (bound $n parameters: sql_with_params) ───┤  memory pool, row limit
//!      │                                                ▼
//!      │      rows ─> pg_compatible (ids -> bytea, maps/structs -> JSON text) ─> arrow-pg
//!      │             encoder (text or binary per column) ─> DataRow messages
//!      ├─ BEGIN / COMMIT / ROLLBACK, SHOW <client parameter>  ─> answered here
//!      │  (read-only data needs no transactions; drivers send them anyway)
//!      └─ anything else (DDL, DML, COPY, SET, CREATE EXTERNAL TABLE, ...)
//!             ─> ERROR 42501 insufficient_privilege; the connection stays usable
//! ```
//!
//! A query's error is reported with a SQLSTATE derived from [`Error`]: 42501 for
//! read-only refusals, 57014 for the time limit, 53200 for the memory limit and the
//! function output limits, 53300 when too many queries run at once, 42601 for syntax
//! errors and 42000 for other planning errors and the size and depth limits of a
//! statement. Parsing, planning and execution run in the query bulkhead
//! ([`crate::bulkhead`]); SQL text over `query.max_sql_bytes` is refused unparsed (pgwire
//! itself buffers a message of up to 1 GiB before Weft sees it). A result cut at `max_result_rows`
//! comes with a NOTICE saying so, and a partial answer (in a cluster, a collector that did
//! not answer) with a WARNING notice per warning. A cancel request (Ctrl-C in psql) drops the running
//! query, which stops its DataFusion execution.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::{Sink, SinkExt, stream};
use pgwire::api::auth::{
    DefaultServerParameterProvider, ServerParameterProvider, StartupHandler, finish_authentication,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionGuard, ConnectionHandle, ConnectionManager,
    PgWireServerHandlers, PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::task::JoinSet;
use weft_receiver::listen::Listener;

use crate::{Error, QueryService};

/// Reported as `server_version`: what clients use to pick protocol features. Weft speaks
/// the protocol of Postgres 16; `SELECT version()` names the real engine.
const SERVER_VERSION: &str = "16.6";

/// Serves the Postgres protocol on `listener` until `shutdown` completes.
///
/// On shutdown the listener closes and open connections are dropped: Postgres sessions
/// are long-lived (an idle psql would hold shutdown for ever) and every statement is
/// read-only, so dropping one loses nothing.
pub async fn serve(
    listener: Listener,
    service: Arc<QueryService>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let handlers = Arc::new(PgHandlers::new(service));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set only holds open ones.
        while connections.try_join_next().is_some() {}
        // The listener caps connections (shedding the oldest) and backs off on accept
        // errors such as running out of file descriptors.
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let handlers = std::sync::Arc::clone(&handlers);
        connections.spawn(async move {
            let peer = accepted.peer;
            tokio::select! {
                result = pgwire::tokio::process_socket(accepted.stream, None, handlers) => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "postgres connection ended");
                    }
                }
                () = accepted.slot.closed() => {
                    tracing::debug!(%peer, "postgres connection closed to make room");
                }
            }
        });
    }
    connections.shutdown().await;
    Ok(())
}

/// The pgwire handler set: one query handler for every connection, plus cancel support.
struct PgHandlers {
    handler: Arc<Handler>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgHandlers {
    fn new(service: Arc<QueryService>) -> Self {
        let connections = Arc::new(ConnectionManager::new());
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = SERVER_VERSION.to_owned();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        let shared = Arc::new(Shared {
            service,
            parameters,
        });
        Self {
            handler: Arc::new(Handler {
                parser: Arc::new(Parser {
                    shared: std::sync::Arc::clone(&shared),
                }),
                shared,
                connections: std::sync::Arc::clone(&connections),
                pids: RandomPidSecretKeyGenerator::default(),
            }),
            cancel: Arc::new(DefaultCancelHandler::new(connections)),
        }
    }
}

impl PgWireServerHandlers for PgHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        std::sync::Arc::clone(&self.handler)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        std::sync::Arc::clone(&self.handler)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        std::sync::Arc::clone(&self.handler)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        std::sync::Arc::clone(&self.cancel)
    }
}

struct Handler {
    shared: Arc<Shared>,
    parser: Arc<Parser>,
    connections: Arc<ConnectionManager>,
    pids: RandomPidSecretKeyGenerator,
}

/// What the query handler and the extended protocol's parser both need.
struct Shared {
    service: Arc<QueryService>,
    /// Sent at startup (`ParameterStatus`) and answered by `SHOW`.
    parameters: DefaultServerParameterProvider,
}

// ---- startup --------------------------------------------------------------------------------

#[async_trait]
impl StartupHandler for Handler {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // No authentication: any user and database name is accepted, like the HTTP API.
        if let PgWireFrontendMessage::Startup(ref startup) = message {
            protocol_negotiation(client, startup).await?;
            save_startup_parameters_to_metadata(client, startup);
            let (pid, secret) = self.pids.generate(client);
            client.set_pid_and_secret_key(pid, secret.clone());
            // The handle lets a cancel request (matched by pid and secret) reach this
            // connection's running query; the guard unregisters it when the session ends.
            let (handle, guard) = self.connections.register(pid, secret);
            client
                .session_extensions()
                .insert::<Arc<ConnectionHandle>>(handle);
            client.session_extensions().insert::<ConnectionGuard>(guard);
            finish_authentication(client, &self.shared.parameters).await?;
        }
        Ok(())
    }
}

// ---- statements -----------------------------------------------------------------------------

/// What a statement is, decided before anything runs.
#[derive(Debug, Clone)]
enum Kind {
    /// Runs through the query service.
    Query,
    /// Answered here: `SHOW` of a client parameter.
    Show {
        name: String,
        value: String,
    },
    Begin,
    Commit,
    Rollback,
}

/// A statement as the extended protocol stores it: the text, what it is, and (for queries)
/// its planned result schema and parameter types.
#[derive(Debug, Clone)]
pub struct PgStatement {
    sql: String,
    kind: Kind,
    /// Result columns after [`pg_compatible`] conversion.
    schema: SchemaRef,
    /// Types DataFusion inferred for `$1`, `$2`, ... (`None`: unknown).
    params: Vec<Option<DataType>>,
}

/// Keywords that start a statement that writes, reads files or changes the session. A
/// statement DataFusion cannot even parse (`COPY t FROM '/file'`) is still refused as a
/// write rather than reported as a syntax error.
const WRITE_KEYWORDS: &[&str] = &[
    "ALTER",
    "ANALYZE",
    "ATTACH",
    "CALL",
    "CLUSTER",
    "COMMENT",
    "COPY",
    "CREATE",
    "DEALLOCATE",
    "DELETE",
    "DETACH",
    "DISCARD",
    "DO",
    "DROP",
    "GRANT",
    "IMPORT",
    "INSERT",
    "INSTALL",
    "LISTEN",
    "LOAD",
    "LOCK",
    "MERGE",
    "NOTIFY",
    "PRAGMA",
    "PREPARE",
    "REFRESH",
    "REINDEX",
    "RESET",
    "REVOKE",
    "SET",
    "TRUNCATE",
    "UNLISTEN",
    "UPDATE",
    "VACUUM",
];

/// The first keyword of `sql`, upper-cased, skipping whitespace and comments.
fn first_keyword(sql: &str) -> String {
    let mut rest = sql.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else if let Some(after) = rest.strip_prefix('(') {
            rest = after.trim_start();
        } else {
            break;
        }
    }
    rest.chars()
        .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
        .collect::<String>()
        .to_ascii_uppercase()
}

fn refused(what: &str) -> Error {
    Error::Forbidden(format!(
        "{what} is not allowed (only SELECT, EXPLAIN and SHOW run here)"
    ))
}

/// Parses `sql` into statements (text each, and what it is). A statement is refused here
/// when it is not a query; the query service's own `SQLOptions` check stays the authority
/// for what does run.
fn classify(sql: &str, parameters: &HashMap<String, String>) -> Result<Vec<(String, Kind)>, Error> {
    let statements = match DFParser::parse_sql(sql) {
        Ok(statements) => statements,
        Err(e) => {
            let keyword = first_keyword(sql);
            if WRITE_KEYWORDS.contains(&keyword.as_str()) {
                return Err(refused(&keyword));
            }
            return Err(Error::from(e));
        }
    };
    let single = statements.len() == 1;
    statements
        .into_iter()
        .map(|statement| {
            // One statement runs as typed; several are split and each re-rendered by the
            // parser (its Display output parses back to the same statement).
            let text = if single {
                sql.to_owned()
            } else {
                statement.to_string()
            };
            let kind = match &statement {
                DfStatement::Statement(inner) => match inner.as_ref() {
                    SqlStatement::Query(_)
                    | SqlStatement::Explain { .. }
                    | SqlStatement::ExplainTable { .. }
                    | SqlStatement::ShowTables { .. }
                    | SqlStatement::ShowColumns { .. }
                    | SqlStatement::ShowFunctions { .. } => Kind::Query,
                    SqlStatement::ShowVariable { variable } => {
                        let name = show_name(variable);
                        match parameters.get(&name) {
                            Some(value) => Kind::Show {
                                name,
                                value: value.clone(),
                            },
                            None => Kind::Query,
                        }
                    }
                    SqlStatement::StartTransaction { .. } => Kind::Begin,
                    SqlStatement::Commit { .. } => Kind::Commit,
                    SqlStatement::Rollback { .. } => Kind::Rollback,
                    _ => return Err(refused(&first_keyword(&text))),
                },
                DfStatement::Explain(_) => Kind::Query,
                DfStatement::CreateExternalTable(_) => {
                    return Err(refused("CREATE EXTERNAL TABLE"));
                }
                DfStatement::CopyTo(_) => return Err(refused("COPY")),
                DfStatement::Reset(_) => return Err(refused("RESET")),
            };
            Ok((text, kind))
        })
        .collect()
}

/// `SHOW TIME ZONE` and `SHOW timezone` name the same parameter, case-insensitively.
fn show_name(variable: &[datafusion::sql::sqlparser::ast::Ident]) -> String {
    let joined = variable
        .iter()
        .map(|i| i.value.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    match joined.as_str() {
        "time zone" => "timezone".to_owned(),
        "transaction isolation level" => "transaction_isolation".to_owned(),
        _ => joined.replace(' ', "_"),
    }
}

impl Shared {
    /// [`classify`] on the query runtime (parsing, and dropping what was parsed, recurse on
    /// the statement), after refusing SQL text over `query.max_sql_bytes` unparsed.
    async fn classify(
        &self,
        sql: &str,
        parameters: HashMap<String, String>,
    ) -> Result<Vec<(String, Kind)>, Error> {
        let limit = self.service.config.max_sql_bytes;
        if sql.len() > limit {
            return Err(Error::BadRequest(format!(
                "the SQL text is {} bytes, over the limit of {limit} (query.max_sql_bytes)",
                sql.len()
            )));
        }
        let sql = sql.to_owned();
        self.service
            .bulkhead()
            .run(async move { classify(&sql, &parameters) })
            .await
    }

    /// Client parameters `SHOW` answers, keyed by lower-case name.
    fn show_parameters<C: ClientInfo>(&self, client: &C) -> HashMap<String, String> {
        let mut out: HashMap<String, String> = self
            .parameters
            .server_parameters(client)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        for (k, v) in [
            ("transaction_isolation", "read committed"),
            ("transaction_read_only", "on"),
            ("max_identifier_length", "63"),
        ] {
            out.insert(k.to_owned(), v.to_owned());
        }
        out.insert(
            "statement_timeout".to_owned(),
            format!("{}s", self.service.config.timeout_secs),
        );
        out
    }
}

// ---- simple query protocol ------------------------------------------------------------------

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = match self
            .shared
            .classify(query, self.shared.show_parameters(client))
            .await
        {
            Ok(statements) => statements,
            Err(e) => return Ok(vec![Response::Error(Box::new(error_info(&e)))]),
        };
        let mut responses = Vec::with_capacity(statements.len());
        // Tracked locally because pgwire applies the responses only after this returns.
        let mut status = client.transaction_status();
        for (text, kind) in statements {
            // Like Postgres, the rest of a failed statement list does not run.
            let response = match self
                .execute(client, &text, &kind, status, None, &Format::UnifiedText)
                .await
            {
                Ok(response) => response,
                Err(e) => {
                    responses.push(Response::Error(Box::new(error_info(&e))));
                    break;
                }
            };
            status = match &response {
                Response::TransactionStart(_) => TransactionStatus::Transaction,
                Response::TransactionEnd(_) => TransactionStatus::Idle,
                _ => status,
            };
            responses.push(response);
        }
        Ok(responses)
    }
}

impl Handler {
    /// Runs one classified statement. `params` are the values bound to `$n`, if any.
    async fn execute<C>(
        &self,
        client: &mut C,
        sql: &str,
        kind: &Kind,
        status: TransactionStatus,
        params: Option<ParamValues>,
        format: &Format,
    ) -> Result<Response, Error>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
    {
        // Postgres refuses everything but the end of a failed transaction; drivers rely on
        // that to notice the failure.
        if status == TransactionStatus::Error && !matches!(kind, Kind::Commit | Kind::Rollback) {
            return Err(Error::BadRequest(
                "current transaction is aborted, commands ignored until end of transaction block"
                    .into(),
            ));
        }
        match kind {
            Kind::Begin => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            // COMMIT of a failed transaction rolls back, and says so.
            Kind::Commit if status == TransactionStatus::Error => {
                Ok(Response::TransactionEnd(Tag::new("ROLLBACK")))
            }
            Kind::Commit => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
            Kind::Rollback => Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))),
            Kind::Show { name, value } => {
                let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]));
                let column: ArrayRef =
                    Arc::new(arrow::array::StringArray::from(vec![value.clone()]));
                let batch = RecordBatch::try_new(std::sync::Arc::clone(&schema), vec![column])
                    .map_err(|e| Error::Execution(e.to_string()))?;
                let mut response = query_response(&schema, vec![batch], format)?;
                response.set_command_tag("SHOW");
                Ok(Response::Query(response))
            }
            Kind::Query => {
                let service = &self.shared.service;
                let runner = std::sync::Arc::clone(service);
                let text = sql.to_owned();
                let result = service
                    .bulkhead()
                    .run(async move {
                        match params {
                            None => runner.sql(&text).await,
                            Some(params) => runner.sql_with_params(&text, params).await,
                        }
                    })
                    .await?;
                if result.truncated {
                    let notice = ErrorInfo::new(
                        "NOTICE".to_owned(),
                        "01000".to_owned(),
                        format!(
                            "result truncated to {} rows (query.max_result_rows)",
                            service.config.max_result_rows
                        ),
                    );
                    // A notice may come at any time; psql prints it with the result.
                    let _ = client
                        .feed(PgWireBackendMessage::NoticeResponse(notice.into()))
                        .await;
                }
                for warning in &result.warnings {
                    // A partial answer (a collector of the cluster did not answer) says so.
                    let notice =
                        ErrorInfo::new("WARNING".to_owned(), "01000".to_owned(), warning.clone());
                    let _ = client
                        .feed(PgWireBackendMessage::NoticeResponse(notice.into()))
                        .await;
                }
                let schema = pg_schema(&result.schema);
                let batches = result
                    .batches
                    .iter()
                    .map(|b| pg_compatible(b, &schema))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Response::Query(query_response(&schema, batches, format)?))
            }
        }
    }
}

fn query_response(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    format: &Format,
) -> Result<QueryResponse, Error> {
    let fields = Arc::new(pg_fields(schema, format)?);
    let row_fields = std::sync::Arc::clone(&fields);
    // Rows are encoded as pgwire sends them, batch by batch.
    let rows = batches
        .into_iter()
        .flat_map(move |batch| encode_recordbatch(std::sync::Arc::clone(&row_fields), batch));
    Ok(QueryResponse::new(fields, stream::iter(rows)))
}

fn pg_fields(schema: &Schema, format: &Format) -> Result<Vec<FieldInfo>, Error> {
    arrow_schema_to_pg_fields(schema, format, None)
        .map_err(|e| Error::Execution(format!("postgres types: {e}")))
}

// ---- extended query protocol ----------------------------------------------------------------

struct Parser {
    shared: Arc<Shared>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let parameters = self.shared.show_parameters(client);
        let mut statements = self
            .shared
            .classify(sql, parameters)
            .await
            .map_err(|e| user_error(&e))?;
        if statements.len() != 1 {
            return Err(user_error(&Error::BadRequest(
                "cannot insert multiple commands into a prepared statement".into(),
            )));
        }
        let (sql, kind) = statements.pop().expect("one statement");
        let (schema, params) = match &kind {
            Kind::Query => {
                let service = std::sync::Arc::clone(&self.shared.service);
                let text = sql.clone();
                self.shared
                    .service
                    .bulkhead()
                    .run(async move { describe(&service, &text).await })
                    .await
                    .map_err(|e| user_error(&e))?
            }
            Kind::Show { name, .. } => (
                Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)])),
                Vec::new(),
            ),
            Kind::Begin | Kind::Commit | Kind::Rollback => (Arc::new(Schema::empty()), Vec::new()),
        };
        Ok(Some(PgStatement {
            sql,
            kind,
            schema,
            params,
        }))
    }

    fn get_parameter_types(&self, stmt: &PgStatement) -> PgWireResult<Vec<Type>> {
        Ok(stmt
            .params
            .iter()
            .map(|t| {
                t.as_ref()
                    .and_then(|t| into_pg_type(t).ok())
                    .unwrap_or(Type::UNKNOWN)
            })
            .collect())
    }

    fn get_result_schema(
        &self,
        stmt: &PgStatement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = column_format.cloned().unwrap_or(Format::UnifiedText);
        pg_fields(&stmt.schema, &format).map_err(|e| user_error(&e))
    }
}

/// Plans a query (no execution) for its result columns and parameter types.
async fn describe(
    service: &QueryService,
    sql: &str,
) -> Result<(SchemaRef, Vec<Option<DataType>>), Error> {
    let timeout_secs = service.config.timeout_secs;
    let plan = async {
        let ctx = service.session()?;
        let df = service.plan_sql(&ctx, sql).await?;
        let types = df.logical_plan().get_parameter_types()?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        Ok::<_, Error>((schema, types))
    };
    let (schema, types) = tokio::time::timeout(Duration::from_secs(timeout_secs), plan)
        .await
        .map_err(|_| Error::Timeout(timeout_secs))??;
    let count = types
        .keys()
        .filter_map(|k| k.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()))
        .max()
        .unwrap_or(0);
    let params = (1..=count)
        .map(|i| types.get(&format!("${i}")).cloned().flatten())
        .collect();
    Ok((pg_schema(&schema), params))
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = PgStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        std::sync::Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PgStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement = &portal.statement;
        let params = if portal.parameter_len() == 0 {
            None
        } else {
            Some(bind_parameters(portal).map_err(|e| user_error(&e))?)
        };
        let status = client.transaction_status();
        let stmt = &statement.statement;
        self.execute(
            client,
            &stmt.sql,
            &stmt.kind,
            status,
            params,
            &portal.result_column_format,
        )
        .await
        .map_err(|e| user_error(&e))
    }
}

/// Turns the portal's parameter bytes into DataFusion values of the types the plan expects.
/// Text-format values are parsed by Arrow's casts; binary ones are decoded by their
/// Postgres type (the client's declared one, else the one we described).
fn bind_parameters(portal: &Portal<PgStatement>) -> Result<ParamValues, Error> {
    let statement: &StoredStatement<PgStatement> = &portal.statement;
    let mut values = Vec::with_capacity(portal.parameter_len());
    for idx in 0..portal.parameter_len() {
        let expected = statement.statement.params.get(idx).cloned().flatten();
        let declared = statement.parameter_types.get(idx).cloned().flatten();
        let pg_type = declared
            .or_else(|| expected.as_ref().and_then(|t| into_pg_type(t).ok()))
            .unwrap_or(Type::UNKNOWN);
        let bad = |e: PgWireError| Error::BadRequest(format!("parameter ${}: {e}", idx + 1));
        let value = if portal.parameter_format.is_binary(idx) {
            binary_parameter(portal, idx, &pg_type).map_err(bad)?
        } else {
            let text = match portal.parameters.get(idx).cloned().flatten() {
                None => None,
                Some(bytes) => Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
                    Error::BadRequest(format!("parameter ${} is not utf-8", idx + 1))
                })?),
            };
            ScalarValue::Utf8(text)
        };
        let value = match &expected {
            Some(t) if value.data_type() != *t => value.cast_to(t).map_err(|e| {
                Error::BadRequest(format!("parameter ${}: {}", idx + 1, e.strip_backtrace()))
            })?,
            _ => value,
        };
        values.push(value);
    }
    Ok(ParamValues::from(values))
}

fn binary_parameter(
    portal: &Portal<PgStatement>,
    idx: usize,
    pg_type: &Type,
) -> PgWireResult<ScalarValue> {
    use chrono::{DateTime, FixedOffset, NaiveDateTime};
    let nanos = |t: Option<NaiveDateTime>| t.and_then(|t| t.and_utc().timestamp_nanos_opt());
    Ok(match *pg_type {
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(idx, pg_type)?),
        Type::INT2 => ScalarValue::Int16(portal.parameter::<i16>(idx, pg_type)?),
        Type::INT4 => ScalarValue::Int32(portal.parameter::<i32>(idx, pg_type)?),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(idx, pg_type)?),
        Type::FLOAT4 => ScalarValue::Float32(portal.parameter::<f32>(idx, pg_type)?),
        Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(idx, pg_type)?),
        Type::BYTEA => ScalarValue::Binary(portal.parameter::<Vec<u8>>(idx, pg_type)?),
        Type::TIMESTAMP => ScalarValue::TimestampNanosecond(
            nanos(portal.parameter::<NaiveDateTime>(idx, pg_type)?),
            None,
        ),
        Type::TIMESTAMPTZ => ScalarValue::TimestampNanosecond(
            portal
                .parameter::<DateTime<FixedOffset>>(idx, pg_type)?
                .and_then(|t| t.timestamp_nanos_opt()),
            Some("UTC".into()),
        ),
        // Text, varchar, unknown: the bytes are the text.
        _ => ScalarValue::Utf8(portal.parameter::<String>(idx, &Type::TEXT)?),
    })
}

// ---- errors ---------------------------------------------------------------------------------

/// The SQLSTATE for an error, so drivers can tell a refusal from a typo.
fn sqlstate(error: &Error) -> &'static str {
    match error {
        Error::Forbidden(_) => "42501",
        Error::Timeout(_) => "57014",
        Error::ResourcesExhausted(_) => "53200",
        Error::Overloaded(_) => "53300",
        Error::NotFound(_) => "42P01",
        Error::BadRequest(m) if m.contains("current transaction is aborted") => "25P02",
        Error::BadRequest(m) if m.starts_with("SQL error") || m.contains("ParserError") => "42601",
        Error::BadRequest(_) | Error::NotAcceptable(_) => "42000",
        Error::Execution(_) | Error::DataUnreadable(_) | Error::Schema(_) => "XX000",
    }
}

fn error_info(error: &Error) -> ErrorInfo {
    ErrorInfo::new(
        "ERROR".to_owned(),
        sqlstate(error).to_owned(),
        error.to_string(),
    )
}

fn user_error(error: &Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(error)))
}

// ---- Arrow -> Postgres ----------------------------------------------------------------------

/// How a column reaches the client.
enum Conversion {
    /// arrow-pg encodes it as is.
    Keep,
    /// Cast to a type arrow-pg encodes (ids -> bytea, dictionaries -> their values).
    Cast(DataType),
    /// Rendered as JSON text: maps (attributes), structs and lists of them.
    Json,
}

fn conversion(data_type: &DataType) -> Conversion {
    use DataType::*;
    match data_type {
        Null | Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64
        | Float32 | Float64 | Utf8 | LargeUtf8 | Utf8View | Binary | LargeBinary | BinaryView
        | Timestamp(..) | Date32 | Date64 | Time32(_) | Time64(_) | Interval(_) | Duration(_)
        | Decimal128(..) => Conversion::Keep,
        FixedSizeBinary(_) => Conversion::Cast(Binary),
        Float16 => Conversion::Cast(Float32),
        Decimal32(..) | Decimal64(..) | Decimal256(..) => Conversion::Cast(Utf8),
        Dictionary(_, value) => match conversion(value) {
            Conversion::Keep => Conversion::Cast(value.as_ref().clone()),
            Conversion::Cast(t) => Conversion::Cast(t),
            Conversion::Json => Conversion::Json,
        },
        List(item) | LargeList(item) | FixedSizeList(item, _) => match conversion(item.data_type())
        {
            Conversion::Keep if !matches!(item.data_type(), Null) => Conversion::Keep,
            _ => Conversion::Json,
        },
        _ => Conversion::Json,
    }
}

/// The schema rows have after [`pg_compatible`].
fn pg_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match conversion(f.data_type()) {
            Conversion::Keep => std::sync::Arc::clone(f),
            Conversion::Cast(t) => Arc::new(Field::new(f.name(), t, true)),
            Conversion::Json => Arc::new(Field::new(f.name(), DataType::Utf8, true)),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Converts `batch` to `schema` (from [`pg_schema`] of its own schema).
fn pg_compatible(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, Error> {
    let columns = batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .map(|(column, field)| match conversion(field.data_type()) {
            Conversion::Keep => Ok(std::sync::Arc::clone(column)),
            Conversion::Cast(t) => arrow::compute::cast(column, &t)
                .map_err(|e| Error::Execution(format!("column {}: {e}", field.name()))),
            Conversion::Json => json_column(column, field),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(std::sync::Arc::clone(schema), columns)
        .map_err(|e| Error::Execution(e.to_string()))
}

/// One JSON document per row (`{"http.route":"/a"}` for a map), null for null.
fn json_column(column: &ArrayRef, field: &FieldRef) -> Result<ArrayRef, Error> {
    let options = arrow::json::writer::EncoderOptions::default();
    let mut encoder = arrow::json::writer::make_encoder(field, column.as_ref(), &options)
        .map_err(|e| Error::Execution(format!("column {}: {e}", field.name())))?;
    let mut out = StringBuilder::with_capacity(column.len(), column.len() * 16);
    let mut buffer = Vec::new();
    for row in 0..column.len() {
        if column.is_null(row) {
            out.append_null();
            continue;
        }
        buffer.clear();
        encoder.encode(row, &mut buffer);
        out.append_value(String::from_utf8_lossy(&buffer));
    }
    Ok(Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Result<Vec<String>, String> {
        let mut parameters = HashMap::new();
        parameters.insert("server_version".to_owned(), "16.6".to_owned());
        classify(sql, &parameters)
            .map(|v| v.into_iter().map(|(_, k)| format!("{k:?}")).collect())
            .map_err(|e| format!("{} {e}", sqlstate(&e)))
    }

    #[test]
    fn queries_run_and_writes_are_refused() {
        assert_eq!(kinds("SELECT 1").unwrap(), vec!["Query"]);
        assert_eq!(
            kinds("select 1; explain select 2").unwrap(),
            vec!["Query", "Query"]
        );
        assert_eq!(
            kinds("SHOW server_version").unwrap(),
            vec![r#"Show { name: "server_version", value: "16.6" }"#]
        );
        assert_eq!(
            kinds("SHOW datafusion.execution.batch_size").unwrap(),
            vec!["Query"]
        );
        assert_eq!(kinds("BEGIN; COMMIT").unwrap(), vec!["Begin", "Commit"]);
        for write in [
            "CREATE TABLE t (a int)",
            "INSERT INTO spans VALUES (1)",
            "DELETE FROM spans",
            "UPDATE spans SET flags = 1",
            "DROP TABLE spans",
            "COPY spans TO '/tmp/x.parquet'",
            "COPY spans FROM '/etc/passwd'",
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
            "SET datafusion.execution.batch_size = 1",
            "  -- comment\n  TRUNCATE spans",
        ] {
            let err = kinds(write).unwrap_err();
            assert!(err.starts_with("42501 "), "{write}: {err}");
        }
        // A later write refuses the whole list before anything runs.
        assert!(
            kinds("SELECT 1; DROP TABLE spans")
                .unwrap_err()
                .starts_with("42501")
        );
        assert!(
            kinds("SELEC 1").unwrap_err().starts_with("42601"),
            "syntax errors are 42601"
        );
    }

    #[test]
    fn columns_become_postgres_types() {
        use arrow::array::{FixedSizeBinaryArray, MapBuilder, StringBuilder};
        let id =
            FixedSizeBinaryArray::try_from_iter(vec![vec![0xab_u8, 0x01]].into_iter()).unwrap();
        let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        map.keys().append_value("http.route");
        map.values().append_value("/a");
        map.append(true).unwrap();
        let map = map.finish();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", id.data_type().clone(), false),
            Field::new("attributes", map.data_type().clone(), false),
        ]));
        let batch = RecordBatch::try_new(
            std::sync::Arc::clone(&schema),
            vec![Arc::new(id) as ArrayRef, Arc::new(map) as ArrayRef],
        )
        .unwrap();
        let pg = pg_schema(&schema);
        let converted = pg_compatible(&batch, &pg).unwrap();
        let fields = pg_fields(&pg, &Format::UnifiedText).unwrap();
        assert_eq!(fields[0].datatype(), &Type::BYTEA);
        assert_eq!(fields[1].datatype(), &Type::TEXT);
        let json = converted
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        assert_eq!(json.value(0), r#"{"http.route":"/a"}"#);
        assert_eq!(fields[0].format(), pgwire::api::results::FieldFormat::Text);
    }
}
