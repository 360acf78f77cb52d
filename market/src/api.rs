//! The JSON API under `/api/v1` (documented in `market/API.md`) and its live event stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use alloy::primitives::U256;
use alloy::providers::{DynProvider, Provider};
use axum::extract::rejection::{QueryRejection, StringRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt as _};
use leasehold_contracts::Deployment;
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use tokio::sync::broadcast;

use crate::console::Console;
use crate::ingest::{Progress, StreamItem};
use crate::store::Store;

const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 500;
/// Events replayed to one stream client after its `Last-Event-ID` (by default): a client
/// further behind gets this many, then the stream ends and it resumes from its last id.
pub const DEFAULT_MAX_REPLAY: u32 = 10_000;
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The payment token as the status route shows it.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub symbol: String,
    pub decimals: u8,
}

/// What every handler reads.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub deployment: Deployment,
    pub rpc: DynProvider,
    pub confirmations: u64,
    pub token: TokenInfo,
    pub stream: broadcast::Sender<StreamItem>,
    pub progress: Arc<Progress>,
    /// See [`DEFAULT_MAX_REPLAY`].
    pub max_replay: u32,
    /// The chain RPC URL browsers should use (`run --public-rpc-url`), shown by the status
    /// route: the one the indexer uses may be unreachable from the user's machine.
    pub public_rpc_url: String,
    /// Permits for relayed gateway calls in flight (`run --relay-max-calls`).
    pub relay_calls: Arc<tokio::sync::Semaphore>,
    /// The relay's open connections to providers' gateways.
    pub gateways: Arc<crate::relay::GatewayConnections>,
}

/// An API error: `{"error": {"code", "message", "field"}}` with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// An SDL's errors as `sdl/validate` lists them (`invalid_sdl` only).
    errors: Option<Vec<Value>>,
}

impl ApiError {
    /// The error's machine-readable code (`relay_busy`, `gateway_timeout`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }

    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        field: Option<&str>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: field.map(str::to_owned),
            errors: None,
        }
    }

    /// The response body.
    pub(crate) fn to_json(&self) -> Value {
        let mut body = json!({"error": {
            "code": self.code,
            "message": self.message,
            "field": self.field,
        }});
        if let Some(errors) = &self.errors {
            body["error"]["errors"] = Value::Array(errors.clone());
        }
        body
    }

    pub(crate) fn bad(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_parameter",
            message: message.into(),
            field: Some(field.to_owned()),
            errors: None,
        }
    }

    /// An SDL that does not validate: the first error's field and message, and every error.
    fn invalid_sdl(errors: Vec<Value>) -> Self {
        let first = errors.first().cloned().unwrap_or_default();
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_sdl",
            message: first["message"]
                .as_str()
                .unwrap_or("the SDL is not valid")
                .to_owned(),
            field: first["field"].as_str().map(str::to_owned),
            errors: Some(errors),
        }
    }

    /// The chain RPC failed or refused a read: the request may succeed later.
    pub(crate) fn chain(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_GATEWAY,
            code: "chain_error",
            message: message.into(),
            field: None,
            errors: None,
        }
    }

    fn not_found(what: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: what.into(),
            field: None,
            errors: None,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        tracing::warn!(%error, "API query failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "database_error",
            message: "the index database failed; see the server log".to_owned(),
            field: None,
            errors: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.to_json())).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The API, and for every other path the console (see [`crate::console`]): API routes match
/// first, and unknown paths under `/api/` stay JSON 404s.
pub fn router(state: ApiState, console: Console) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/providers", get(providers))
        .route("/api/v1/providers/{address}", get(provider))
        .route("/api/v1/orders", get(orders))
        .route("/api/v1/orders/{id}", get(order))
        .route("/api/v1/orders/{id}/bids", get(order_bids))
        .route("/api/v1/leases", get(leases))
        .route("/api/v1/leases/{id}", get(lease))
        .route("/api/v1/prices", get(prices))
        .route("/api/v1/capacity/history", get(capacity_history))
        .route("/api/v1/events", get(events))
        .route("/api/v1/stream", get(stream))
        .route("/api/v1/sdl/validate", post(validate_sdl))
        .route("/api/v1/preflight", post(preflight))
        .route(
            "/api/v1/gateway/{provider}/{method}",
            post(crate::relay::relay).layer(axum::extract::DefaultBodyLimit::max(
                crate::relay::MAX_BODY_BYTES,
            )),
        )
        .fallback(move |method: Method, uri: Uri| {
            let console = console.clone();
            async move { console.respond(method, uri).await }
        })
        .with_state(state)
}

// ------------------------------------------------------------------ query parameters

/// A route's query string: known keys only, each at most once.
struct Params(Vec<(String, String)>);

impl Params {
    fn new(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        allowed: &[&str],
    ) -> Result<Self, ApiError> {
        let Query(pairs) =
            query.map_err(|e| ApiError::bad("query", format!("unreadable query string: {e}")))?;
        for (index, (key, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&key.as_str()) {
                return Err(ApiError::bad(
                    key,
                    format!(
                        "unknown parameter; this route takes: {}",
                        allowed.join(", ")
                    ),
                ));
            }
            if pairs[..index].iter().any(|(earlier, _)| earlier == key) {
                return Err(ApiError::bad(key, "given more than once"));
            }
        }
        Ok(Self(pairs))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn limit(&self) -> Result<i64, ApiError> {
        let Some(text) = self.get("limit") else {
            return Ok(DEFAULT_LIMIT as i64);
        };
        match text.parse::<u64>() {
            Ok(limit @ 1..=MAX_LIMIT) => Ok(limit as i64),
            _ => Err(ApiError::bad(
                "limit",
                format!("must be a whole number from 1 to {MAX_LIMIT}, not `{text}`"),
            )),
        }
    }

    fn u64(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key).map(|text| parse_id(key, text)).transpose()
    }

    fn address(&self, key: &str) -> Result<Option<String>, ApiError> {
        self.get(key)
            .map(|text| parse_address(key, text))
            .transpose()
    }

    fn one_of(
        &self,
        key: &str,
        allowed: &[&'static str],
    ) -> Result<Option<&'static str>, ApiError> {
        let Some(text) = self.get(key) else {
            return Ok(None);
        };
        allowed
            .iter()
            .find(|value| **value == text)
            .copied()
            .map(Some)
            .ok_or_else(|| ApiError::bad(key, format!("must be one of {}", allowed.join(", "))))
    }
}

fn parse_id(field: &str, text: &str) -> Result<i64, ApiError> {
    text.parse::<u64>()
        .ok()
        .and_then(|value| i64::try_from(value).ok())
        .ok_or_else(|| ApiError::bad(field, format!("must be a whole number, not `{text}`")))
}

pub(crate) fn parse_address(field: &str, text: &str) -> Result<String, ApiError> {
    let hex = text.strip_prefix("0x").unwrap_or_default();
    if hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(format!("0x{}", hex.to_ascii_lowercase()))
    } else {
        Err(ApiError::bad(
            field,
            "must be a 0x-prefixed 20-byte hex address",
        ))
    }
}

/// `<block>:<log_index>`.
fn parse_position(field: &str, text: &str) -> Result<(i64, i64), ApiError> {
    let bad = || ApiError::bad(field, format!("must be <block>:<log_index>, not `{text}`"));
    let (block, index) = text.split_once(':').ok_or_else(bad)?;
    let block = parse_id(field, block).map_err(|_| bad())?;
    let index = parse_id(field, index).map_err(|_| bad())?;
    Ok((block, index))
}

fn next_cursor(items: &[Value], limit: i64, cursor: impl Fn(&Value) -> String) -> Value {
    match items.last() {
        Some(last) if items.len() as i64 == limit => json!(cursor(last)),
        _ => Value::Null,
    }
}

// ------------------------------------------------------------------ row helpers

fn text(row: &AnyRow, column: &str) -> Result<String, ApiError> {
    Ok(row.try_get::<String, _>(column)?)
}

fn opt_text(row: &AnyRow, column: &str) -> Result<Option<String>, ApiError> {
    Ok(row.try_get::<Option<String>, _>(column)?)
}

fn int(row: &AnyRow, column: &str) -> Result<i64, ApiError> {
    Ok(row.try_get::<i64, _>(column)?)
}

fn opt_int(row: &AnyRow, column: &str) -> Result<Option<i64>, ApiError> {
    Ok(row.try_get::<Option<i64>, _>(column)?)
}

/// The chain time of the newest indexed event (what "now" means for an order's bid window).
async fn chain_now(pool: &AnyPool) -> Result<i64, ApiError> {
    let row = sqlx::query("SELECT at FROM events ORDER BY block DESC, log_index DESC LIMIT 1")
        .fetch_optional(pool)
        .await?;
    Ok(match row {
        Some(row) => int(&row, "at")?,
        None => 0,
    })
}

// ------------------------------------------------------------------ status

async fn status(State(state): State<ApiState>) -> ApiResult {
    let cursor = state
        .store
        .cursor()
        .await
        .map_err(|e| ApiError::from(sqlx::Error::Protocol(e.to_string())))?;
    let indexed_block = cursor.map(|cursor| cursor.next_block.saturating_sub(1));
    let head_block =
        match tokio::time::timeout(Duration::from_secs(2), state.rpc.get_block_number()).await {
            Ok(Ok(head)) => {
                state.progress.head_block.store(head, Ordering::Relaxed);
                Some(head)
            }
            _ => Some(state.progress.head_block.load(Ordering::Relaxed)).filter(|head| *head > 0),
        };
    let deployment = &state.deployment;
    Ok(Json(json!({
        "chain_id": deployment.chain_id,
        "head_block": head_block,
        "indexed_block": indexed_block,
        "confirmations": state.confirmations,
        "contracts": {
            "marketplace": crate::apply::address(deployment.marketplace),
            "registry": crate::apply::address(deployment.registry),
            "token": crate::apply::address(deployment.token),
        },
        "token": {"symbol": state.token.symbol, "decimals": state.token.decimals},
        "rpc_url": state.public_rpc_url,
    })))
}

// ------------------------------------------------------------------ providers

const PROVIDER_COLUMNS: &str = "address, endpoint, status, gateway_cert_sha256, cpu_millis, \
    memory_bytes, storage_bytes, allocated_cpu_millis, allocated_memory_bytes, \
    allocated_storage_bytes, stake, deliveries_confirmed, deliveries_failed, active_leases, \
    registered_block, updated_block";

async fn provider_json(pool: &AnyPool, row: &AnyRow) -> Result<Value, ApiError> {
    let address = text(row, "address")?;
    let attributes = sqlx::query(
        "SELECT a.attribute_key, n.name FROM provider_attributes a \
         LEFT JOIN names n ON n.name_key = a.attribute_key WHERE a.provider = $1 ORDER BY a.position",
    )
    .bind(&address)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| Ok(json!({"key": text(row, "attribute_key")?, "name": opt_text(row, "name")?})))
    .collect::<Result<Vec<_>, ApiError>>()?;
    let gpus = sqlx::query(
        "SELECT g.model_key, n.name, g.total, g.allocated FROM provider_gpus g \
         LEFT JOIN names n ON n.name_key = g.model_key WHERE g.provider = $1 ORDER BY g.model_key",
    )
    .bind(&address)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| {
        Ok(json!({
            "model_key": text(row, "model_key")?,
            "name": opt_text(row, "name")?,
            "total": int(row, "total")?,
            "allocated": int(row, "allocated")?,
        }))
    })
    .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(json!({
        "address": address,
        "endpoint": text(row, "endpoint")?,
        "status": text(row, "status")?,
        "gateway_cert_sha256": text(row, "gateway_cert_sha256")?,
        "attributes": attributes,
        "gpus": gpus,
        "capacity": {
            "cpu_millis": int(row, "cpu_millis")?,
            "memory_bytes": int(row, "memory_bytes")?,
            "storage_bytes": int(row, "storage_bytes")?,
        },
        "allocated": {
            "cpu_millis": int(row, "allocated_cpu_millis")?,
            "memory_bytes": int(row, "allocated_memory_bytes")?,
            "storage_bytes": int(row, "allocated_storage_bytes")?,
        },
        "stake": text(row, "stake")?,
        "deliveries_confirmed": int(row, "deliveries_confirmed")?,
        "deliveries_failed": int(row, "deliveries_failed")?,
        "active_leases": int(row, "active_leases")?,
        "registered_block": int(row, "registered_block")?,
        "updated_block": int(row, "updated_block")?,
    }))
}

async fn providers(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let params = Params::new(query, &["limit", "before", "status"])?;
    let limit = params.limit()?;
    let before = params.address("before")?;
    let status = params.one_of("status", &["active", "unbonding", "deregistered"])?;
    let rows = sqlx::query(&format!(
        "SELECT {PROVIDER_COLUMNS} FROM providers WHERE ($1 = '' OR address < $1) \
         AND ($2 = '' OR status = $2) ORDER BY address DESC LIMIT $3"
    ))
    .bind(before.unwrap_or_default())
    .bind(status.unwrap_or_default())
    .bind(limit)
    .fetch_all(state.store.pool())
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        items.push(provider_json(state.store.pool(), row).await?);
    }
    let next = next_cursor(&items, limit, |item| {
        item["address"].as_str().unwrap_or_default().to_owned()
    });
    Ok(Json(json!({"items": items, "next": next})))
}

async fn provider(State(state): State<ApiState>, Path(address): Path<String>) -> ApiResult {
    let address = parse_address("address", &address)?;
    let row = sqlx::query(&format!(
        "SELECT {PROVIDER_COLUMNS} FROM providers WHERE address = $1"
    ))
    .bind(&address)
    .fetch_optional(state.store.pool())
    .await?
    .ok_or_else(|| ApiError::not_found(format!("provider {address} is not indexed")))?;
    Ok(Json(provider_json(state.store.pool(), &row).await?))
}

// ------------------------------------------------------------------ orders and bids

const ORDER_COLUMNS: &str = "id, tenant, manifest_hash, state, max_price_per_hour, escrow, \
    bid_window_end, cpu_millis, memory_bytes, storage_bytes, gpu_count, replicas, \
    auto_accept_provider, auto_accept_max_price, created_block, created_at";

fn order_json(row: &AnyRow, now: i64) -> Result<Value, ApiError> {
    let stored = text(row, "state")?;
    let bid_window_end = int(row, "bid_window_end")?;
    // An open order past its bid window with no lease is shown as expired.
    let state = if stored == "open" && bid_window_end < now {
        "expired".to_owned()
    } else {
        stored
    };
    let auto_accept = match opt_text(row, "auto_accept_max_price")? {
        Some(max_price) => json!({
            "provider": opt_text(row, "auto_accept_provider")?,
            "max_price_per_hour": max_price,
        }),
        None => Value::Null,
    };
    Ok(json!({
        "id": int(row, "id")?.to_string(),
        "tenant": text(row, "tenant")?,
        "manifest_hash": text(row, "manifest_hash")?,
        "state": state,
        "max_price_per_hour": text(row, "max_price_per_hour")?,
        "escrow": text(row, "escrow")?,
        "bid_window_end": bid_window_end,
        "created_block": int(row, "created_block")?,
        "created_at": int(row, "created_at")?,
        "auto_accept": auto_accept,
        "resources": {
            "cpu_millis": int(row, "cpu_millis")?,
            "memory_bytes": int(row, "memory_bytes")?,
            "storage_bytes": int(row, "storage_bytes")?,
            "gpu_count": int(row, "gpu_count")?,
            "replicas": int(row, "replicas")?,
        },
    }))
}

async fn orders(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let params = Params::new(query, &["limit", "before", "tenant", "state"])?;
    let limit = params.limit()?;
    let before = params.u64("before")?.unwrap_or(i64::MAX);
    let tenant = params.address("tenant")?.unwrap_or_default();
    let wanted = params.one_of("state", &["open", "matched", "cancelled", "expired"])?;
    let pool = state.store.pool();
    let now = chain_now(pool).await?;
    // `open` and `expired` share the stored state and differ by the bid window.
    let (stored, window) = match wanted {
        Some("open") => ("open", "AND bid_window_end >= $4"),
        Some("expired") => ("open", "AND bid_window_end < $4"),
        Some(other) => (other, "AND $4 = $4"),
        None => ("", "AND $4 = $4"),
    };
    let rows = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id < $1 AND ($2 = '' OR tenant = $2) \
         AND ($3 = '' OR state = $3) {window} ORDER BY id DESC LIMIT $5"
    ))
    .bind(before)
    .bind(tenant)
    .bind(stored)
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let items = rows
        .iter()
        .map(|row| order_json(row, now))
        .collect::<Result<Vec<_>, _>>()?;
    let next = next_cursor(&items, limit, |item| {
        item["id"].as_str().unwrap_or_default().to_owned()
    });
    Ok(Json(json!({"items": items, "next": next})))
}

fn bid_json(row: &AnyRow) -> Result<Value, ApiError> {
    Ok(json!({
        "order_id": int(row, "order_id")?.to_string(),
        "bid_id": int(row, "bid_id")?.to_string(),
        "provider": text(row, "provider")?,
        "price_per_hour": text(row, "price_per_hour")?,
        "state": text(row, "state")?,
        "gpu_model": opt_text(row, "gpu_model")?,
        "gpu_model_name": opt_text(row, "gpu_model_name")?,
        "placed_block": int(row, "placed_block")?,
        "placed_at": int(row, "placed_at")?,
    }))
}

async fn bids_of(pool: &AnyPool, order_id: i64) -> Result<Vec<Value>, ApiError> {
    sqlx::query(
        "SELECT b.order_id, b.bid_id, b.provider, b.price_per_hour, b.state, b.gpu_model, \
         n.name AS gpu_model_name, b.placed_block, b.placed_at FROM bids b \
         LEFT JOIN names n ON n.name_key = b.gpu_model WHERE b.order_id = $1 ORDER BY b.bid_id",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(bid_json)
    .collect()
}

async fn find_order(pool: &AnyPool, id: i64) -> Result<AnyRow, ApiError> {
    sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("order {id} is not indexed")))
}

async fn order(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id("id", &id)?;
    let pool = state.store.pool();
    let row = find_order(pool, id).await?;
    let mut value = order_json(&row, chain_now(pool).await?)?;
    value["bids"] = json!(bids_of(pool, id).await?);
    Ok(Json(value))
}

async fn order_bids(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id("id", &id)?;
    let pool = state.store.pool();
    find_order(pool, id).await?;
    Ok(Json(
        json!({"items": bids_of(pool, id).await?, "next": null}),
    ))
}

// ------------------------------------------------------------------ leases

const LEASE_SELECT: &str = "SELECT l.id, l.order_id, l.bid_id, l.tenant, l.provider, \
    l.price_per_hour, l.gpu_model, l.state, l.paid_total, l.confirmed_at, l.created_block, \
    l.created_at, o.escrow, c.block AS closed_block, c.at AS closed_at, c.reason, c.refund, \
    c.paid AS closed_paid, \
    (SELECT MAX(p.at) FROM payments p WHERE p.lease_id = l.id) AS last_paid_at \
    FROM leases l JOIN orders o ON o.id = l.order_id LEFT JOIN closes c ON c.lease_id = l.id";

fn amount(row: &AnyRow, column: &str) -> Result<U256, ApiError> {
    let value = text(row, column)?;
    value.parse().map_err(|_| {
        ApiError::from(sqlx::Error::Decode(
            format!("{column} `{value}` is not a decimal amount").into(),
        ))
    })
}

fn lease_json(row: &AnyRow) -> Result<Value, ApiError> {
    let state = text(row, "state")?;
    let escrow_left = amount(row, "escrow")?;
    let price = amount(row, "price_per_hour")?;
    let confirmed_at = opt_int(row, "confirmed_at")?;
    // Accrual runs from the confirmation (or the last withdrawal) at the lease price; the
    // escrow covers escrow * 3600 / price seconds of it.
    let runs_out_at = match (state.as_str(), confirmed_at) {
        ("active", Some(confirmed_at)) if !price.is_zero() => {
            let settled = opt_int(row, "last_paid_at")?
                .unwrap_or(confirmed_at)
                .max(confirmed_at);
            let covered = escrow_left.saturating_mul(U256::from(3600u64)) / price;
            let covered = i64::try_from(covered).unwrap_or(i64::MAX);
            Some(settled.saturating_add(covered))
        }
        _ => None,
    };
    let closed = match opt_int(row, "closed_block")? {
        Some(block) => json!({
            "block": block,
            "at": opt_int(row, "closed_at")?,
            "reason": opt_text(row, "reason")?,
            "refund": opt_text(row, "refund")?,
            "paid": opt_text(row, "closed_paid")?,
        }),
        None => Value::Null,
    };
    Ok(json!({
        "id": int(row, "id")?.to_string(),
        "order_id": int(row, "order_id")?.to_string(),
        "bid_id": int(row, "bid_id")?.to_string(),
        "tenant": text(row, "tenant")?,
        "provider": text(row, "provider")?,
        "price_per_hour": price.to_string(),
        "gpu_model": opt_text(row, "gpu_model")?,
        "state": state,
        "escrow_left": escrow_left.to_string(),
        "paid_total": text(row, "paid_total")?,
        "runs_out_at": runs_out_at,
        "created_block": int(row, "created_block")?,
        "created_at": int(row, "created_at")?,
        "confirmed": confirmed_at.is_some(),
        "confirmed_at": confirmed_at,
        "closed": closed,
    }))
}

async fn leases(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let params = Params::new(query, &["limit", "before", "tenant", "provider", "state"])?;
    let limit = params.limit()?;
    let before = params.u64("before")?.unwrap_or(i64::MAX);
    let tenant = params.address("tenant")?.unwrap_or_default();
    let provider = params.address("provider")?.unwrap_or_default();
    let wanted = params
        .one_of("state", &["active", "closed"])?
        .unwrap_or_default();
    let rows = sqlx::query(&format!(
        "{LEASE_SELECT} WHERE l.id < $1 AND ($2 = '' OR l.tenant = $2) \
         AND ($3 = '' OR l.provider = $3) AND ($4 = '' OR l.state = $4) ORDER BY l.id DESC LIMIT $5"
    ))
    .bind(before)
    .bind(tenant)
    .bind(provider)
    .bind(wanted)
    .bind(limit)
    .fetch_all(state.store.pool())
    .await?;
    let items = rows.iter().map(lease_json).collect::<Result<Vec<_>, _>>()?;
    let next = next_cursor(&items, limit, |item| {
        item["id"].as_str().unwrap_or_default().to_owned()
    });
    Ok(Json(json!({"items": items, "next": next})))
}

async fn lease(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id("id", &id)?;
    let pool = state.store.pool();
    let row = sqlx::query(&format!("{LEASE_SELECT} WHERE l.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("lease {id} is not indexed")))?;
    let mut value = lease_json(&row)?;
    let payments = sqlx::query(
        "SELECT block, at, amount, total_paid FROM payments WHERE lease_id = $1 \
         ORDER BY block, log_index",
    )
    .bind(id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| {
        Ok(json!({
            "block": int(row, "block")?,
            "at": int(row, "at")?,
            "amount": text(row, "amount")?,
            "total_paid": text(row, "total_paid")?,
        }))
    })
    .collect::<Result<Vec<_>, ApiError>>()?;
    let top_ups = sqlx::query(
        "SELECT block, at, from_address, amount, escrow FROM top_ups WHERE order_id = $1 \
         ORDER BY block, log_index",
    )
    .bind(id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| {
        Ok(json!({
            "block": int(row, "block")?,
            "at": int(row, "at")?,
            "from": text(row, "from_address")?,
            "amount": text(row, "amount")?,
            "escrow": text(row, "escrow")?,
        }))
    })
    .collect::<Result<Vec<_>, ApiError>>()?;
    value["payments"] = json!(payments);
    value["top_ups"] = json!(top_ups);
    Ok(Json(value))
}

// ------------------------------------------------------------------ history

/// A GPU model given as its 0x key or as its published name.
async fn model_key(pool: &AnyPool, text: &str) -> Result<Option<String>, ApiError> {
    if let Some(hex) = text.strip_prefix("0x") {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::bad(
                "gpu_model",
                "must be a 0x-prefixed 32-byte key or a published model name",
            ));
        }
        return Ok(Some(text.to_ascii_lowercase()));
    }
    let row = sqlx::query("SELECT name_key FROM names WHERE name = $1")
        .bind(text)
        .fetch_optional(pool)
        .await?;
    row.map(|row| text_of(&row)).transpose()
}

fn text_of(row: &AnyRow) -> Result<String, ApiError> {
    text(row, "name_key")
}

async fn prices(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let params = Params::new(query, &["gpu_model", "since", "limit"])?;
    let limit = params.limit()?;
    let since = params.u64("since")?.unwrap_or(0);
    let pool = state.store.pool();
    let key = match params.get("gpu_model") {
        Some(model) => match model_key(pool, model).await? {
            Some(key) => key,
            // A name nobody published yet has no prices.
            None => return Ok(Json(json!({"items": [], "next": null}))),
        },
        None => String::new(),
    };
    let rows = sqlx::query(
        "SELECT p.at, p.block, p.lease_id, p.price_per_hour, p.gpu_model, n.name FROM price_history p \
         LEFT JOIN names n ON n.name_key = p.gpu_model \
         WHERE p.at >= $1 AND ($2 = '' OR p.gpu_model = $2) ORDER BY p.at, p.block, p.log_index LIMIT $3",
    )
    .bind(since)
    .bind(key)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let items = rows
        .iter()
        .map(|row| {
            Ok(json!({
                "at": int(row, "at")?,
                "block": int(row, "block")?,
                "lease_id": int(row, "lease_id")?.to_string(),
                "price_per_hour": text(row, "price_per_hour")?,
                "gpu_model": opt_text(row, "gpu_model")?,
                "gpu_model_name": opt_text(row, "name")?,
            }))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(json!({"items": items, "next": null})))
}

async fn capacity_history(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let params = Params::new(query, &["provider", "since", "limit"])?;
    let limit = params.limit()?;
    let since = params.u64("since")?.unwrap_or(0);
    let provider = params.address("provider")?.unwrap_or_default();
    let rows = sqlx::query(
        "SELECT provider, block, at, cpu_millis, memory_bytes, storage_bytes, allocated_cpu_millis, \
         allocated_memory_bytes, allocated_storage_bytes FROM capacity_history \
         WHERE at >= $1 AND ($2 = '' OR provider = $2) ORDER BY at, block, log_index LIMIT $3",
    )
    .bind(since)
    .bind(provider)
    .bind(limit)
    .fetch_all(state.store.pool())
    .await?;
    let items = rows
        .iter()
        .map(|row| {
            Ok(json!({
                "at": int(row, "at")?,
                "block": int(row, "block")?,
                "provider": text(row, "provider")?,
                "capacity": {
                    "cpu_millis": int(row, "cpu_millis")?,
                    "memory_bytes": int(row, "memory_bytes")?,
                    "storage_bytes": int(row, "storage_bytes")?,
                },
                "allocated": {
                    "cpu_millis": int(row, "allocated_cpu_millis")?,
                    "memory_bytes": int(row, "allocated_memory_bytes")?,
                    "storage_bytes": int(row, "allocated_storage_bytes")?,
                },
            }))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(json!({"items": items, "next": null})))
}

// ------------------------------------------------------------------ events and the stream

/// One event as `/api/v1/events` and the stream show it.
pub fn event_json(
    block: u64,
    log_index: u64,
    tx_hash: &str,
    at: u64,
    kind: &str,
    data: Value,
) -> Value {
    json!({
        "block": block,
        "log_index": log_index,
        "tx_hash": tx_hash,
        "at": at,
        "kind": kind,
        "data": data,
    })
}

fn event_row(row: &AnyRow) -> Result<(i64, i64, Value), ApiError> {
    let block = int(row, "block")?;
    let log_index = int(row, "log_index")?;
    let data: Value = serde_json::from_str(&text(row, "data")?).unwrap_or(Value::Null);
    let value = event_json(
        block as u64,
        log_index as u64,
        &text(row, "tx_hash")?,
        int(row, "at")? as u64,
        &text(row, "kind")?,
        data,
    );
    Ok((block, log_index, value))
}

/// The events after a position, oldest first. The `block >= $1` conjunct is what lets both
/// databases start the scan at the position in the primary key (with the bare `OR`,
/// PostgreSQL read the table from its start: a page deep into 120k events took 10–30 ms).
async fn events_after(
    pool: &AnyPool,
    (block, log_index): (i64, i64),
    limit: i64,
) -> Result<Vec<(i64, i64, Value)>, ApiError> {
    sqlx::query(
        "SELECT block, log_index, tx_hash, at, kind, data FROM events \
         WHERE block >= $1 AND (block > $1 OR log_index > $2) ORDER BY block, log_index LIMIT $3",
    )
    .bind(block)
    .bind(log_index)
    .bind(limit)
    .fetch_all(pool)
    .await?
    .iter()
    .map(event_row)
    .collect()
}

async fn events(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let params = Params::new(query, &["after", "limit"])?;
    let limit = params.limit()?;
    let after = match params.get("after") {
        Some(text) => parse_position("after", text)?,
        None => (-1, -1),
    };
    let rows = events_after(state.store.pool(), after, limit).await?;
    let next = match rows.last() {
        Some((block, index, _)) if rows.len() as i64 == limit => json!(format!("{block}:{index}")),
        _ => Value::Null,
    };
    let items: Vec<Value> = rows.into_iter().map(|(_, _, value)| value).collect();
    Ok(Json(json!({"items": items, "next": next})))
}

fn sse_event(block: i64, log_index: i64, kind: &str, json: &Value) -> Event {
    Event::default()
        .id(format!("{block}:{log_index}"))
        .event(kind)
        .data(json.to_string())
}

async fn stream(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last_seen = match headers.get("last-event-id") {
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| ApiError::bad("Last-Event-ID", "must be <block>:<log_index>"))?;
            Some(parse_position("Last-Event-ID", text)?)
        }
        None => None,
    };
    // Subscribe before reading the backlog, so nothing committed in between is lost.
    let receiver = state.stream.subscribe();
    let backlog = match last_seen {
        Some(after) => events_after(state.store.pool(), after, i64::from(state.max_replay)).await?,
        None => Vec::new(),
    };
    // A capped replay ends the stream: the client resumes from its last id, so nothing
    // between the replay and the live events is skipped.
    let truncated = backlog.len() as u64 == u64::from(state.max_replay);
    let replayed_through = backlog
        .last()
        .map(|(block, index, _)| (*block, *index))
        .or(last_seen)
        .unwrap_or((-1, -1));
    let replay = futures_util::stream::iter(
        backlog
            .into_iter()
            .map(|(block, index, value)| {
                let kind = value["kind"].as_str().unwrap_or_default().to_owned();
                Ok(sse_event(block, index, &kind, &value))
            })
            .collect::<Vec<_>>(),
    );
    let live = futures_util::stream::unfold(
        (receiver, replayed_through),
        |(mut receiver, mut through)| async move {
            loop {
                match receiver.recv().await {
                    Ok(StreamItem::Event {
                        block,
                        log_index,
                        kind,
                        json,
                    }) => {
                        let position = (block as i64, log_index as i64);
                        if position <= through {
                            continue;
                        }
                        through = position;
                        let event = sse_event(position.0, position.1, kind, &json);
                        return Some((Ok(event), (receiver, through)));
                    }
                    Ok(StreamItem::Reorg { fork_block }) => {
                        // Events from the fork on are re-sent as the canonical chain has them.
                        through = through.min((fork_block as i64, -1));
                        let event = Event::default()
                            .event("reorg")
                            .data(json!({"fork_block": fork_block}).to_string());
                        return Some((Ok(event), (receiver, through)));
                    }
                    // A client too slow for the live rate reconnects with Last-Event-ID and
                    // gets the rest from the database.
                    Err(_) => return None,
                }
            }
        },
    );
    let live = live.take(if truncated { 0 } else { usize::MAX });
    Ok(Sse::new(replay.chain(live))
        .keep_alive(KeepAlive::new().interval(KEEPALIVE).text("keepalive")))
}

// ------------------------------------------------------------------ SDL

async fn validate_sdl(body: Result<String, StringRejection>) -> ApiResult {
    let body =
        body.map_err(|e| ApiError::bad("body", format!("the SDL must be UTF-8 text: {e}")))?;
    Ok(Json(crate::sdl::validate(&body)))
}

/// The preflight of an SDL that validates; one that does not is a 400 `invalid_sdl` with
/// `sdl/validate`'s errors.
async fn preflight(
    State(state): State<ApiState>,
    body: Result<String, StringRejection>,
) -> Result<Json<leasehold_preflight::Preflight>, ApiError> {
    let body =
        body.map_err(|e| ApiError::bad("body", format!("the SDL must be UTF-8 text: {e}")))?;
    let groups = crate::sdl::validated_groups(&body).map_err(ApiError::invalid_sdl)?;
    Ok(Json(crate::preflight::report(&state, &groups).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &[
        "",
        ":",
        "::",
        "1:",
        ":1",
        "-1",
        "1e3",
        "0x",
        "0X00",
        "ä",
        "0xäää",
        "18446744073709551616",
        "9223372036854775808",
        "1:18446744073709551615",
        "\u{0}",
        "0x0000000000000000000000000000000000000ü",
        "%00",
        "1:2:3",
    ];

    #[test]
    fn hostile_values_are_refused_with_their_field_never_a_panic() {
        for text in HOSTILE {
            let error = parse_id("id", text).expect_err(text);
            assert_eq!(error.field.as_deref(), Some("id"), "{text}");
            let error = parse_address("tenant", text).expect_err(text);
            assert_eq!(error.field.as_deref(), Some("tenant"), "{text}");
            if let Err(error) = parse_position("after", text) {
                assert_eq!(error.field.as_deref(), Some("after"), "{text}");
            }
        }
    }

    #[test]
    fn good_values_parse() {
        assert_eq!(parse_id("id", "42").ok(), Some(42));
        assert_eq!(parse_position("after", "7:3").ok(), Some((7, 3)));
        assert_eq!(
            parse_address("tenant", "0xAbCdEf0000000000000000000000000000000001").ok(),
            Some("0xabcdef0000000000000000000000000000000001".to_owned())
        );
    }
}
