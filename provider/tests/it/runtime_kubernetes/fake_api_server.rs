//! An in-process fake Kubernetes API server for the runtime's client-flow tests:
//! real HTTP on 127.0.0.1, the JSON a real server sends (objects with
//! resourceVersion, lists, `Status` errors, newline-delimited watch events, pod
//! logs), and a minimal controller and kubelet: applied Deployments/StatefulSets get
//! pods, which start shortly after (emitting Events), crash-loop when their command
//! exits with a code, or back off pulling an image from a `.invalid` registry.
//! Pod exec upgrades to a websocket and runs a tiny shell ([`exec`]).
//! It records every request so tests can check how the client talked to it.
//! It is not Kubernetes: no admission, no quota enforcement, no scheduling.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{StreamExt, stream};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

mod exec;
pub use exec::RecordedExec;

/// How long the fake kubelet takes to start a pod.
const START_DELAY: Duration = Duration::from_millis(150);
/// The node every pod lands on, and its address.
pub const NODE_NAME: &str = "fake-node-a";
pub const NODE_IP: &str = "10.0.0.5";
const FIRST_NODE_PORT: u16 = 30080;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
}

/// `(api prefix/plural, namespace or "", name)`
type Key = (String, String, String);

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    requests: Vec<RecordedRequest>,
    next_node_port: u16,
    next_pod: u64,
    /// Namespaces deleted but still answering GET once (Terminating), as a real
    /// server does while it removes their content.
    terminating: BTreeSet<String>,
    /// Applies that changed nothing (server-side apply no-ops).
    unchanged_applies: u64,
    log_lines: Vec<String>,
    execs: Vec<RecordedExec>,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    watchers: broadcast::Sender<(String, String, Value)>,
    /// Tells running exec sessions to drop their connection without a close handshake.
    exec_breaks: broadcast::Sender<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub struct FakeApiServer {
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A parsed resource path.
#[derive(Debug, Clone)]
struct Route {
    resource: String,
    namespace: String,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match *segments.first()? {
        "api" => (format!("api/{}", segments.get(1)?), segments.get(2..)?),
        "apis" => (
            format!("apis/{}/{}", segments.get(1)?, segments.get(2)?),
            segments.get(3..)?,
        ),
        _ => return None,
    };
    let owned = |index: usize| rest.get(index).map(|s| (*s).to_owned());
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        Some(Route {
            resource: format!("{prefix}/{}", rest.get(2)?),
            namespace: owned(1)?,
            name: owned(3),
            sub: owned(4),
        })
    } else {
        Some(Route {
            resource: format!("{prefix}/{}", rest.first()?),
            namespace: String::new(),
            name: owned(1),
            sub: owned(2),
        })
    }
}

fn query_param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

fn decode(value: &str) -> String {
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%'
            && let Some(hex) = value.get(i + 1..i + 3)
            && let Ok(decoded) = u8::from_str_radix(hex, 16)
        {
            out.push(decoded);
            i += 3;
            continue;
        }
        out.push(if byte == b'+' { b' ' } else { byte });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn labels_match(object: &Value, selector: &str) -> bool {
    let labels = &object["metadata"]["labels"];
    selector
        .split(',')
        .filter(|term| !term.is_empty())
        .all(|term| {
            if let Some((key, value)) = term.split_once("!=") {
                labels[key].as_str() != Some(value)
            } else if let Some((key, value)) = term.split_once('=') {
                labels[key].as_str() == Some(value.trim_start_matches('='))
            } else {
                !labels[term].is_null()
            }
        })
}

fn status_body(code: u16, reason: &str, message: String) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

type Body = BoxBody<Bytes, Infallible>;

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn not_found(route: &Route) -> Response<Body> {
    let name = route.name.clone().unwrap_or_default();
    json_response(
        StatusCode::NOT_FOUND,
        &status_body(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", route.resource),
        ),
    )
}

fn now() -> String {
    "2026-01-01T00:00:00Z".to_owned()
}

impl FakeApiServer {
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server");
        let address = listener.local_addr().expect("local address");
        let (watchers, _) = broadcast::channel(1024);
        let (exec_breaks, _) = broadcast::channel(1);
        let shared = Shared {
            state: Arc::new(Mutex::new(State {
                next_node_port: FIRST_NODE_PORT,
                log_lines: vec!["ready".to_owned()],
                ..State::default()
            })),
            watchers,
            exec_breaks,
        };
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(shared.clone(), request));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        FakeApiServer {
            url: format!("http://{address}"),
            shared,
            task,
        }
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Every exec so far, with what its session received.
    pub fn execs(&self) -> Vec<RecordedExec> {
        self.shared.lock().execs.clone()
    }

    /// Cuts every running exec session's connection, as a lost API server or node does:
    /// no status, no close frame.
    pub fn break_exec_connections(&self) {
        let _ = self.shared.exec_breaks.send(());
    }

    /// Makes the NodePort allocator hand out `port` next (then counting up from it), so a
    /// test can put a real local listener where a NodePort's traffic would go.
    pub fn set_next_node_port(&self, port: u16) {
        self.shared.lock().next_node_port = port;
    }

    /// Applies since start that changed nothing.
    pub fn unchanged_applies(&self) -> u64 {
        self.shared.lock().unchanged_applies
    }

    /// Names of the namespaces that exist (terminating ones included).
    pub fn namespaces(&self) -> Vec<String> {
        self.shared
            .lock()
            .objects
            .keys()
            .filter(|(resource, _, _)| resource == "api/v1/namespaces")
            .map(|(_, _, name)| name.clone())
            .collect()
    }

    /// Every stored object of a resource (`api/v1/services`), in any namespace.
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        self.shared
            .lock()
            .objects
            .iter()
            .filter(|((kind, _, _), _)| kind == resource)
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Stores an object as if another client had created it (nodes, foreign pods).
    pub fn insert(&self, path: &str, mut object: Value) {
        let route = parse_route(path).expect("a resource path");
        let name = object["metadata"]["name"]
            .as_str()
            .expect("object name")
            .to_owned();
        let mut state = self.shared.lock();
        state.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
        if !route.namespace.is_empty() {
            object["metadata"]["namespace"] = json!(route.namespace);
        }
        state
            .objects
            .insert((route.resource, route.namespace, name), object);
    }
}

async fn handle(shared: Shared, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    shared.lock().requests.push(RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type,
    });
    if method == Method::GET
        && let Some(route) = parse_route(&path)
        && route.sub.as_deref() == Some("exec")
    {
        return Ok(exec::upgrade(&shared, &route, &query, request));
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let Some(route) = parse_route(&path) else {
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            &status_body(404, "NotFound", format!("no route {path}")),
        ));
    };
    let response = match (method, route.name.is_some(), route.sub.as_deref()) {
        (Method::GET, true, Some("log")) => logs(&shared, &route, &query),
        (Method::GET, true, None) => get(&shared, &route),
        (Method::GET, false, _) if matches!(query_param(&query, "watch"), Some("true" | "1")) => {
            watch(&shared, &route, &query)
        }
        (Method::GET, false, _) => list(&shared, &route, &query),
        (Method::PATCH, true, None) => apply(&shared, &route, &body),
        (Method::POST, false, _) => create(&shared, &route, &body),
        (Method::DELETE, true, None) => delete(&shared, &route),
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &status_body(405, "MethodNotAllowed", path.clone()),
        ),
    };
    Ok(response)
}

fn key_of(route: &Route) -> Key {
    (
        route.resource.clone(),
        route.namespace.clone(),
        route.name.clone().unwrap_or_default(),
    )
}

fn get(shared: &Shared, route: &Route) -> Response<Body> {
    let mut state = shared.lock();
    let key = key_of(route);
    let Some(object) = state.objects.get(&key).cloned() else {
        return not_found(route);
    };
    if route.resource == "api/v1/namespaces" {
        let name = key.2.clone();
        if state.terminating.remove(&name) {
            // Answer "Terminating" this once; the namespace and its content are gone after.
            state.objects.remove(&key);
            state
                .objects
                .retain(|(_, namespace, _), _| *namespace != name);
        }
    }
    json_response(StatusCode::OK, &object)
}

fn matching<'s>(state: &'s State, route: &Route, query: &str) -> Vec<&'s Value> {
    let selector = query_param(query, "labelSelector").map(decode);
    state
        .objects
        .iter()
        .filter(|((resource, namespace, _), _)| {
            *resource == route.resource
                && (route.namespace.is_empty() || *namespace == route.namespace)
        })
        .map(|(_, object)| object)
        .filter(|object| selector.as_deref().is_none_or(|s| labels_match(object, s)))
        .collect()
}

fn list(shared: &Shared, route: &Route, query: &str) -> Response<Body> {
    let state = shared.lock();
    let items: Vec<Value> = matching(&state, route, query)
        .into_iter()
        .cloned()
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": "v1", "kind": "List",
            "metadata": {"resourceVersion": state.resource_version.to_string()},
            "items": items,
        }),
    )
}

fn watch(shared: &Shared, route: &Route, query: &str) -> Response<Body> {
    let since: u64 = query_param(query, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let receiver = shared.watchers.subscribe();
    let backlog: Vec<Value> = {
        let state = shared.lock();
        matching(&state, route, query)
            .into_iter()
            .filter(|object| {
                object["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|version| version > since)
            })
            .map(|object| json!({"type": "ADDED", "object": object}))
            .collect()
    };
    let resource = route.resource.clone();
    let namespace = route.namespace.clone();
    let live = stream::unfold(receiver, move |mut receiver| {
        let resource = resource.clone();
        let namespace = namespace.clone();
        async move {
            loop {
                match receiver.recv().await {
                    Ok((r, n, event))
                        if r == resource && (namespace.is_empty() || n == namespace) =>
                    {
                        return Some((event, receiver));
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    let frames = stream::iter(backlog)
        .chain(live)
        .map(|event| Ok(Frame::data(Bytes::from(format!("{event}\n")))));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn logs(shared: &Shared, route: &Route, query: &str) -> Response<Body> {
    let state = shared.lock();
    let pod_key = key_of(route);
    let Some(pod) = state.objects.get(&pod_key) else {
        return not_found(route);
    };
    if pod["status"]["phase"].as_str() != Some("Running") {
        let name = pod_key.2.clone();
        return json_response(
            StatusCode::BAD_REQUEST,
            &status_body(
                400,
                "BadRequest",
                format!("container in pod \"{name}\" is waiting to start: ContainerCreating"),
            ),
        );
    }
    let timestamps = query_param(query, "timestamps") == Some("true");
    let follow = query_param(query, "follow") == Some("true");
    let mut lines: Vec<String> = state
        .log_lines
        .iter()
        .map(|line| {
            if timestamps {
                format!("2026-01-01T00:00:01.000000000Z {line}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    if let Some(tail) = query_param(query, "tailLines").and_then(|n| n.parse::<usize>().ok()) {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    let frames = stream::iter(lines).map(|line| Ok(Frame::data(Bytes::from(line))));
    let body = if follow {
        BodyExt::boxed(StreamBody::new(frames.chain(stream::pending())))
    } else {
        BodyExt::boxed(StreamBody::new(frames))
    };
    Response::new(body)
}

/// Stores an object version and tells the watchers.
fn store(shared: &Shared, state: &mut State, key: Key, mut object: Value, event: &str) -> Value {
    state.resource_version += 1;
    object["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
    state.objects.insert(key.clone(), object.clone());
    let _ = shared.watchers.send((
        key.0,
        key.1,
        json!({"type": event, "object": object.clone()}),
    ));
    object
}

fn create(shared: &Shared, route: &Route, body: &[u8]) -> Response<Body> {
    let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &status_body(400, "BadRequest", "malformed JSON".to_owned()),
        );
    };
    let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let mut route = route.clone();
    route.name = Some(name);
    let mut state = shared.lock();
    let key = key_of(&route);
    if state.objects.contains_key(&key) {
        return json_response(
            StatusCode::CONFLICT,
            &status_body(409, "AlreadyExists", format!("{} already exists", key.2)),
        );
    }
    if !route.namespace.is_empty() {
        object["metadata"]["namespace"] = json!(route.namespace);
    }
    object["metadata"]["uid"] = json!(format!("uid-{}", state.resource_version + 1));
    object["metadata"]["creationTimestamp"] = json!(now());
    let stored = store(shared, &mut state, key, object, "ADDED");
    json_response(StatusCode::CREATED, &stored)
}

/// Server-side apply, simplified: the applied object replaces what the manager set,
/// server-owned fields (uid, creation time, status, assigned node ports) are kept,
/// and an apply that changes nothing changes nothing (not even resourceVersion).
fn apply(shared: &Shared, route: &Route, body: &[u8]) -> Response<Body> {
    let Ok(mut applied) = serde_json::from_slice::<Value>(body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &status_body(400, "BadRequest", "apply body is not JSON".to_owned()),
        );
    };
    let mut state = shared.lock();
    let key = key_of(route);
    if !route.namespace.is_empty() {
        if !state.objects.contains_key(&(
            "api/v1/namespaces".to_owned(),
            String::new(),
            route.namespace.clone(),
        )) {
            return json_response(
                StatusCode::NOT_FOUND,
                &status_body(
                    404,
                    "NotFound",
                    format!("namespaces \"{}\" not found", route.namespace),
                ),
            );
        }
        applied["metadata"]["namespace"] = json!(route.namespace);
    }
    let existing = state.objects.get(&key).cloned();
    if let Some(existing) = &existing {
        for field in ["uid", "creationTimestamp", "generation"] {
            applied["metadata"][field] = existing["metadata"][field].clone();
        }
        if !existing["status"].is_null() {
            applied["status"] = existing["status"].clone();
        }
    } else {
        applied["metadata"]["uid"] = json!(format!("uid-{}", state.resource_version + 1));
        applied["metadata"]["creationTimestamp"] = json!(now());
        applied["metadata"]["generation"] = json!(1);
    }
    if route.resource == "api/v1/services" && applied["spec"]["type"] == "NodePort" {
        assign_node_ports(&mut state, &mut applied, existing.as_ref());
    }
    if let Some(existing) = &existing {
        let mut comparable = existing.clone();
        if let Some(metadata) = comparable["metadata"].as_object_mut() {
            metadata.remove("resourceVersion");
        }
        if comparable == applied {
            state.unchanged_applies += 1;
            return json_response(StatusCode::OK, existing);
        }
        if existing["spec"] != applied["spec"] {
            let generation = existing["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            applied["metadata"]["generation"] = json!(generation);
        }
    }
    let created = existing.is_none();
    let template_changed = existing
        .as_ref()
        .is_none_or(|existing| existing["spec"]["template"] != applied["spec"]["template"]);
    let stored = store(
        shared,
        &mut state,
        key,
        applied,
        if created { "ADDED" } else { "MODIFIED" },
    );
    let is_workload = matches!(
        route.resource.as_str(),
        "apis/apps/v1/deployments" | "apis/apps/v1/statefulsets"
    );
    let mut started = Vec::new();
    if is_workload {
        started = reconcile_pods(shared, &mut state, route, &stored, template_changed);
    }
    drop(state);
    for pod in started {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(START_DELAY).await;
            run_kubelet(&shared, &pod);
        });
    }
    json_response(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &stored,
    )
}

fn assign_node_ports(state: &mut State, applied: &mut Value, existing: Option<&Value>) {
    let Some(ports) = applied["spec"]["ports"].as_array_mut() else {
        return;
    };
    for port in ports {
        if !port["nodePort"].is_null() {
            continue;
        }
        let previous = existing
            .and_then(|existing| existing["spec"]["ports"].as_array())
            .and_then(|ports| ports.iter().find(|p| p["name"] == port["name"]))
            .map(|p| p["nodePort"].clone());
        port["nodePort"] = previous.unwrap_or_else(|| {
            let assigned = state.next_node_port;
            state.next_node_port += 1;
            json!(assigned)
        });
    }
}

/// A workload's `matchLabels` as a label selector string.
fn pod_selector(workload: &Value) -> String {
    workload["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The controller: brings the workload's pods to its replica count, replacing them
/// all when the template changed. Returns the keys of pods to start.
fn reconcile_pods(
    shared: &Shared,
    state: &mut State,
    route: &Route,
    workload: &Value,
    template_changed: bool,
) -> Vec<Key> {
    let name = route.name.clone().unwrap_or_default();
    let ordered = route.resource.ends_with("statefulsets");
    let selector = pod_selector(workload);
    let pod_resource = "api/v1/pods".to_owned();
    let existing: Vec<Key> = state
        .objects
        .iter()
        .filter(|((resource, namespace, _), pod)| {
            *resource == pod_resource
                && *namespace == route.namespace
                && labels_match(pod, &selector)
        })
        .map(|(key, _)| key.clone())
        .collect();
    let mut keep = Vec::new();
    for key in existing {
        if template_changed {
            state.objects.remove(&key);
        } else {
            keep.push(key);
        }
    }
    let replicas = workload["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    while keep.len() > replicas {
        if let Some(key) = keep.pop() {
            state.objects.remove(&key);
        }
    }
    let template = &workload["spec"]["template"];
    let mut started = Vec::new();
    for index in keep.len()..replicas {
        state.next_pod += 1;
        let pod_name = if ordered {
            format!("{name}-{index}")
        } else {
            format!(
                "{name}-7d9f8c6b5{}-x{:04}",
                state.next_pod % 10,
                state.next_pod
            )
        };
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": pod_name, "namespace": route.namespace,
                "labels": template["metadata"]["labels"],
                "uid": format!("pod-uid-{}", state.next_pod),
                "creationTimestamp": format!("2026-01-01T00:00:{:02}Z", state.next_pod % 60),
            },
            "spec": {
                "nodeName": NODE_NAME,
                "containers": template["spec"]["containers"],
            },
            "status": {"phase": "Pending"},
        });
        let key = (pod_resource.clone(), route.namespace.clone(), pod_name);
        store(shared, state, key.clone(), pod, "ADDED");
        started.push(key);
    }
    started
}

fn record_event(
    shared: &Shared,
    state: &mut State,
    namespace: &str,
    pod: &str,
    reason: &str,
    message: String,
) {
    state.next_pod += 1;
    let name = format!("{pod}.{:x}", state.next_pod);
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": namespace},
        "reason": reason, "message": message, "type": "Normal",
    });
    store(
        shared,
        state,
        ("api/v1/events".to_owned(), namespace.to_owned(), name),
        event,
        "ADDED",
    );
}

/// The kubelet: starts a pod, crash-loops it when its command is `exit N`, or backs
/// off pulling when its image is on a `.invalid` registry.
fn run_kubelet(shared: &Shared, key: &Key) {
    let mut state = shared.lock();
    let Some(mut pod) = state.objects.get(key).cloned() else {
        return;
    };
    let container = pod["spec"]["containers"][0].clone();
    let image = container["image"].as_str().unwrap_or("").to_owned();
    let container_name = container["name"].clone();
    let command: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(container["args"].as_array().into_iter().flatten())
        .filter_map(|part| part.as_str().map(str::to_owned))
        .collect();
    let exit_code = command
        .last()
        .and_then(|last| last.strip_prefix("exit "))
        .and_then(|code| code.trim().parse::<i64>().ok());
    let (namespace, pod_name) = (key.1.clone(), key.2.clone());
    record_event(
        shared,
        &mut state,
        &namespace,
        &pod_name,
        "Scheduled",
        format!("Successfully assigned {namespace}/{pod_name} to {NODE_NAME}"),
    );
    record_event(
        shared,
        &mut state,
        &namespace,
        &pod_name,
        "Pulling",
        format!("Pulling image \"{image}\""),
    );
    pod["status"]["hostIP"] = json!(NODE_IP);
    if image.contains(".invalid/") {
        pod["status"]["containerStatuses"] = json!([{
            "name": container_name, "image": image, "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff",
                "message": format!("Back-off pulling image \"{image}\"")}},
        }]);
        record_event(
            shared,
            &mut state,
            &namespace,
            &pod_name,
            "Failed",
            format!("Failed to pull image \"{image}\""),
        );
    } else {
        record_event(
            shared,
            &mut state,
            &namespace,
            &pod_name,
            "Pulled",
            format!("Successfully pulled image \"{image}\""),
        );
        record_event(
            shared,
            &mut state,
            &namespace,
            &pod_name,
            "Created",
            "Created container".to_owned(),
        );
        record_event(
            shared,
            &mut state,
            &namespace,
            &pod_name,
            "Started",
            "Started container".to_owned(),
        );
        pod["status"]["phase"] = json!("Running");
        pod["status"]["podIP"] = json!("10.244.0.10");
        pod["status"]["containerStatuses"] = match exit_code {
            Some(code) => json!([{
                "name": container_name, "image": image, "imageID": "", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff",
                    "message": "back-off 20s restarting failed container"}},
                "lastState": {"terminated": {"exitCode": code, "reason": "Error"}},
            }]),
            None => json!([{
                "name": container_name, "image": image, "imageID": "", "ready": true, "restartCount": 0,
                "started": true, "state": {"running": {"startedAt": now()}},
            }]),
        };
    }
    store(shared, &mut state, key.clone(), pod, "MODIFIED");
}

fn delete(shared: &Shared, route: &Route) -> Response<Body> {
    let mut state = shared.lock();
    let key = key_of(route);
    let Some(mut object) = state.objects.get(&key).cloned() else {
        return not_found(route);
    };
    if route.resource == "api/v1/namespaces" {
        object["metadata"]["deletionTimestamp"] = json!(now());
        object["status"] = json!({"phase": "Terminating"});
        state.terminating.insert(key.2.clone());
        let stored = store(shared, &mut state, key, object, "MODIFIED");
        return json_response(StatusCode::OK, &stored);
    }
    state.objects.remove(&key);
    if matches!(
        route.resource.as_str(),
        "apis/apps/v1/deployments" | "apis/apps/v1/statefulsets"
    ) {
        let selector = pod_selector(&object);
        let namespace = route.namespace.clone();
        state.objects.retain(|(resource, ns, _), pod| {
            !(resource == "api/v1/pods" && *ns == namespace && labels_match(pod, &selector))
        });
    }
    json_response(StatusCode::OK, &object)
}
