//! Pod exec as the API server and kubelet serve it: the websocket upgrade on
//! `GET .../pods/{pod}/exec` with the channel subprotocol (`v5.channel.k8s.io` or
//! `v4.channel.k8s.io`), then one binary frame per message whose first byte is the
//! channel: 0 stdin, 1 stdout, 2 stderr, 3 the final `Status`, 4 terminal resizes, and
//! (v5 only) 255 "this stream is closed".
//!
//! The "container" runs no program: it understands a tiny shell, `sh -c "a; b"` or a
//! plain argv, with `echo ARGS` (stdout), `echo ARGS >&2` (stderr), `cat` (stdin back to
//! stdout until stdin closes) and `exit N`, so the same commands mean the same on a real
//! busybox container. Anything else is "not found", code 127.

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Message, Role};

use super::{Body, Route, Shared, decode, json_response, key_of, not_found, status_body};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// The subprotocols this server speaks, newest first.
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// One exec as the fake saw it, updated while the session runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedExec {
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// The subprotocol both sides agreed on.
    pub protocol: String,
    /// Everything received on the stdin channel.
    pub received_stdin: Vec<u8>,
    /// `(width, height)` of every resize message, in order.
    pub resizes: Vec<(u16, u16)>,
    /// The client closed stdin (a v5 close frame, or the websocket on v4).
    pub stdin_closed: bool,
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

fn bad_request(message: String) -> Response<Body> {
    json_response(
        StatusCode::BAD_REQUEST,
        &status_body(400, "BadRequest", message),
    )
}

fn flag(query: &[(String, String)], key: &str) -> bool {
    query
        .iter()
        .any(|(k, v)| k == key && matches!(v.as_str(), "true" | "1"))
}

/// Answers an exec request: an API error before any websocket when the pod, the
/// container or the request is wrong, else 101 and a session on the upgraded connection.
pub(super) fn upgrade(
    shared: &Shared,
    route: &Route,
    query: &str,
    request: Request<Incoming>,
) -> Response<Body> {
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect();
    let pod_name = route.name.clone().unwrap_or_default();
    let container = pairs
        .iter()
        .find(|(key, _)| key == "container")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let command: Vec<String> = pairs
        .iter()
        .filter(|(key, _)| key == "command")
        .map(|(_, value)| value.clone())
        .collect();
    let mut recorded = RecordedExec {
        pod: pod_name.clone(),
        container: container.clone(),
        command: command.clone(),
        stdin: flag(&pairs, "stdin"),
        stdout: flag(&pairs, "stdout"),
        stderr: flag(&pairs, "stderr"),
        tty: flag(&pairs, "tty"),
        ..RecordedExec::default()
    };
    {
        let state = shared.lock();
        let Some(pod) = state.objects.get(&key_of(route)) else {
            return not_found(route);
        };
        let has_container = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"].as_str() == Some(container.as_str()));
        if !has_container {
            return bad_request(format!(
                "container {container} is not valid for pod {pod_name}"
            ));
        }
        if pod["status"]["phase"].as_str() != Some("Running") {
            return bad_request(format!("pod {pod_name} is not running"));
        }
    }
    if command.is_empty() {
        return bad_request("you must specify at least 1 command".to_owned());
    }
    if recorded.tty && recorded.stderr {
        return bad_request("stderr and tty cannot both be true".to_owned());
    }
    let header = |name: header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    if !header(header::UPGRADE).is_some_and(|value| value.eq_ignore_ascii_case("websocket")) {
        return bad_request("exec needs an Upgrade: websocket request".to_owned());
    }
    let Some(key) = header(header::SEC_WEBSOCKET_KEY) else {
        return bad_request("missing Sec-WebSocket-Key".to_owned());
    };
    let offered = header(header::SEC_WEBSOCKET_PROTOCOL).unwrap_or_default();
    let Some(protocol) = offered
        .split(',')
        .map(str::trim)
        .find(|offered| PROTOCOLS.contains(offered))
    else {
        return bad_request(format!("no supported channel protocol in {offered:?}"));
    };
    recorded.protocol = protocol.to_owned();
    let index = {
        let mut state = shared.lock();
        state.execs.push(recorded.clone());
        state.execs.len() - 1
    };
    let session = Session {
        shared: shared.clone(),
        index,
        exec: recorded,
    };
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(request).await else {
            return;
        };
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        session.run(socket).await;
    });

    let mut response = Response::new(Full::new(Bytes::new()).boxed());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = derive_accept_key(key.as_bytes());
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Ok(protocol) = HeaderValue::from_str(protocol) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

/// The statements of a command: `sh -c "a; b"` runs a and b, any other argv is one.
fn statements(command: &[String]) -> Vec<Vec<String>> {
    let script = match command {
        [shell, dash_c, script] if shell == "sh" && dash_c == "-c" => script.clone(),
        argv => argv.join(" "),
    };
    script
        .split(';')
        .map(|statement| statement.split_whitespace().map(str::to_owned).collect())
        .filter(|words: &Vec<String>| !words.is_empty())
        .collect()
}

/// Why a session stopped before its command ended.
struct ConnectionGone;

struct Session {
    shared: Shared,
    index: usize,
    exec: RecordedExec,
}

impl Session {
    fn record(&self, update: impl FnOnce(&mut RecordedExec)) {
        if let Some(exec) = self.shared.lock().execs.get_mut(self.index) {
            update(exec);
        }
    }

    async fn send(
        &self,
        socket: &mut Socket,
        channel: u8,
        data: &[u8],
    ) -> Result<(), ConnectionGone> {
        let mut frame = Vec::with_capacity(data.len() + 1);
        frame.push(channel);
        frame.extend_from_slice(data);
        socket
            .send(Message::binary(frame))
            .await
            .map_err(|_| ConnectionGone)
    }

    async fn run(self, mut socket: Socket) {
        // The API server opens with one frame per stream holding only its channel byte.
        let open = [
            (STDIN, self.exec.stdin),
            (STDOUT, self.exec.stdout),
            (STDERR, self.exec.stderr),
            (STATUS, true),
            (RESIZE, self.exec.tty),
        ];
        for (channel, _) in open.iter().filter(|(_, is_open)| *is_open) {
            if self.send(&mut socket, *channel, &[]).await.is_err() {
                return;
            }
        }
        let Ok(code) = self.run_command(&mut socket).await else {
            // Dropped without a close frame: the client sees the connection reset.
            return;
        };
        let status = if code == 0 {
            json!({"metadata": {}, "status": "Success"})
        } else {
            json!({
                "metadata": {}, "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit code {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            })
        };
        if self
            .send(&mut socket, STATUS, status.to_string().as_bytes())
            .await
            .is_ok()
        {
            let _ = socket.close(None).await;
        }
    }

    /// Runs the statements in order; the code of the last one run is the command's.
    async fn run_command(&self, socket: &mut Socket) -> Result<i64, ConnectionGone> {
        // With a terminal, stderr is the terminal too.
        let error_channel = if self.exec.tty { STDOUT } else { STDERR };
        let mut code = 0;
        for words in statements(&self.exec.command) {
            let (words, channel) = match words.split_last() {
                Some((last, before)) if last == ">&2" => (before, error_channel),
                _ => (words.as_slice(), STDOUT),
            };
            let rest = words.get(1..).unwrap_or_default().join(" ");
            code = match words.first().map(String::as_str).unwrap_or_default() {
                "echo" => {
                    self.send(socket, channel, format!("{rest}\n").as_bytes())
                        .await?;
                    0
                }
                "cat" => {
                    self.cat(socket).await?;
                    0
                }
                "exit" => return Ok(rest.trim().parse().unwrap_or(2)),
                other => {
                    let message = format!("sh: {other}: not found\n");
                    self.send(socket, error_channel, message.as_bytes()).await?;
                    127
                }
            };
        }
        Ok(code)
    }

    /// Copies stdin to stdout until stdin closes, recording resizes on the way.
    async fn cat(&self, socket: &mut Socket) -> Result<(), ConnectionGone> {
        if !self.exec.stdin {
            return Ok(());
        }
        let mut breaks = self.shared.exec_breaks.subscribe();
        loop {
            let next = tokio::select! {
                next = socket.next() => next,
                _ = breaks.recv() => return Err(ConnectionGone),
            };
            let frame = match next {
                Some(Ok(Message::Binary(frame))) => frame,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // v4 has no stream close: the client closes the whole websocket.
                    self.record(|exec| exec.stdin_closed = true);
                    return Err(ConnectionGone);
                }
                Some(Ok(_)) => continue,
            };
            let Some((&channel, data)) = frame.split_first() else {
                continue;
            };
            match channel {
                STDIN => {
                    self.record(|exec| exec.received_stdin.extend_from_slice(data));
                    self.send(socket, STDOUT, data).await?;
                }
                RESIZE => {
                    let size: Value = serde_json::from_slice(data).unwrap_or_default();
                    let dimension = |name: &str| {
                        size[name]
                            .as_u64()
                            .and_then(|value| u16::try_from(value).ok())
                            .unwrap_or(0)
                    };
                    let resize = (dimension("Width"), dimension("Height"));
                    self.record(|exec| exec.resizes.push(resize));
                }
                CLOSE if self.exec.protocol == PROTOCOLS[0] && data == [STDIN] => {
                    self.record(|exec| exec.stdin_closed = true);
                    return Ok(());
                }
                _ => {}
            }
        }
    }
}
