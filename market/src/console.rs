//! The built web console (`market/console/dist`) served at `/` next to the API.
//!
//! Only regular files under the console directory are ever read: a request path is
//! percent-decoded once, and any `.` or `..` segment, empty segment (`//`), backslash, NUL or
//! drive-like segment is refused before the file system is touched; what remains is resolved
//! (symlinks included) and must still lie inside the directory. Directories are never listed.

use std::io;
use std::path::{Component, Path, PathBuf};

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

/// Where `leasehold-market run` looks for the console when `--console-dir` is not given,
/// relative to the current directory (the repository root in development).
pub const DEFAULT_CONSOLE_DIR: &str = "market/console/dist";

const HOW_TO_BUILD: &str = "the web console is not served: build it with `scripts/console build` \
     (into market/console/dist) and start leasehold-market from the repository root, or pass \
     --console-dir DIR";

/// A console directory that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("--console-dir {}: {source}", dir.display())]
    Unreadable { dir: PathBuf, source: io::Error },
    #[error("--console-dir {}: no index.html in it (build the console with `scripts/console build`)", dir.display())]
    NotBuilt { dir: PathBuf },
}

/// The console's files, or none (then every non-API path answers how to build it).
#[derive(Debug, Clone, Default)]
pub struct Console {
    /// Canonical, so that a resolved file can be checked to lie inside it.
    root: Option<PathBuf>,
}

impl Console {
    /// No console: `/` answers a 404 saying how to build one.
    pub fn none() -> Self {
        Self::default()
    }

    /// Serves `dir`, which must hold a built console (`index.html`).
    pub fn open(dir: &Path) -> Result<Self, ConsoleError> {
        let root = dir
            .canonicalize()
            .map_err(|source| ConsoleError::Unreadable {
                dir: dir.to_owned(),
                source,
            })?;
        if !root.join("index.html").is_file() {
            return Err(ConsoleError::NotBuilt {
                dir: dir.to_owned(),
            });
        }
        Ok(Self { root: Some(root) })
    }

    /// `--console-dir` when given, else [`DEFAULT_CONSOLE_DIR`] when it holds a built console,
    /// else none.
    pub fn from_flag(dir: Option<&Path>) -> Result<Self, ConsoleError> {
        match dir {
            Some(dir) => Self::open(dir),
            None => Ok(Self::open(Path::new(DEFAULT_CONSOLE_DIR)).unwrap_or_default()),
        }
    }

    /// The directory served, if any.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// The answer to a request no API route took.
    pub async fn respond(&self, method: Method, uri: Uri) -> Response {
        let path = uri.path();
        if path == "/api" || path.starts_with("/api/") {
            return error(StatusCode::NOT_FOUND, "not_found", "no such route", None);
        }
        let Some(root) = self.root.clone() else {
            return error(
                StatusCode::NOT_FOUND,
                "console_not_built",
                HOW_TO_BUILD,
                None,
            );
        };
        if method != Method::GET && method != Method::HEAD {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the console's files are read with GET or HEAD",
                None,
            );
        }
        let relative = match relative_path(path) {
            Ok(relative) => relative,
            Err(reason) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_path",
                    reason,
                    Some("path"),
                );
            }
        };
        let read = tokio::task::spawn_blocking(move || read_inside(&root, &relative)).await;
        match read {
            Ok(Some((bytes, content_type))) => {
                // For HEAD the server sends the headers only.
                let mut response = bytes.into_response();
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
                // The bundle's names do not change between builds: always revalidate.
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                response
            }
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such file in the console",
                None,
            ),
            Err(join) => {
                tracing::warn!(error = %join, "reading a console file failed");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "reading the file failed; see the server log",
                    None,
                )
            }
        }
    }
}

/// The console alone (what [`crate::api::router`] falls back to).
pub fn router(console: Console) -> Router {
    Router::new().fallback(move |method: Method, uri: Uri| {
        let console = console.clone();
        async move { console.respond(method, uri).await }
    })
}

fn error(status: StatusCode, code: &str, message: &str, field: Option<&str>) -> Response {
    let body = json!({"error": {"code": code, "message": message, "field": field}});
    (status, Json(body)).into_response()
}

/// The file a URL path names, relative to the console directory; `/` is `index.html`.
/// Refused (with the reason): anything that could name a file outside the directory.
pub fn relative_path(path: &str) -> Result<PathBuf, &'static str> {
    let decoded =
        percent_decode(path).ok_or("the path has a malformed %-escape or is not UTF-8")?;
    let trimmed = decoded
        .strip_prefix('/')
        .ok_or("the path must start with /")?;
    if trimmed.is_empty() {
        return Ok(PathBuf::from("index.html"));
    }
    let mut relative = PathBuf::new();
    for segment in trimmed.split('/') {
        if segment.is_empty() {
            return Err("the path has an empty segment (//)");
        }
        if segment == "." || segment == ".." {
            return Err("the path has a . or .. segment");
        }
        if segment.contains(['\\', '\0', ':']) {
            return Err("the path has a backslash, NUL or colon");
        }
        relative.push(segment);
    }
    // Belt and braces: after the checks above only plain names remain.
    if !relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
    {
        return Err("the path is not a plain relative file name");
    }
    Ok(relative)
}

/// Percent-decodes a URL path once; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let hex = bytes.get(index + 1..index + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The bytes and content type of `root/relative` when it resolves (symlinks followed) to a
/// regular file inside `root`; `None` otherwise, directories included.
fn read_inside(root: &Path, relative: &Path) -> Option<(Vec<u8>, &'static str)> {
    let resolved = root.join(relative).canonicalize().ok()?;
    if !resolved.starts_with(root) || !resolved.is_file() {
        return None;
    }
    let bytes = std::fs::read(&resolved).ok()?;
    Some((bytes, content_type(&resolved)))
}

/// The Content-Type of a console file by its extension.
pub fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("wasm") => "application/wasm",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_map_inside_and_root_is_the_index() {
        assert_eq!(relative_path("/"), Ok(PathBuf::from("index.html")));
        assert_eq!(relative_path("/app.js"), Ok(PathBuf::from("app.js")));
        assert_eq!(
            relative_path("/assets/a%20b.css"),
            Ok(PathBuf::from("assets/a b.css"))
        );
    }

    #[test]
    fn traversal_in_every_spelling_is_refused() {
        for hostile in [
            "/..",
            "/../etc/passwd",
            "/a/../../x",
            "/%2e%2e/x",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/.%2e/x",
            "//etc/passwd",
            "/%2fetc/passwd",
            "/a/./b",
            "/..%5cwindows",
            "/c:%5cwindows",
            "/x%00.html",
            "/%zz",
            "/%e",
            "/%ff%fe",
            "relative",
        ] {
            assert!(relative_path(hostile).is_err(), "{hostile} was accepted");
        }
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(
            content_type(Path::new("index.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("app.JS")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("app.css")),
            "text/css; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("blob")), "application/octet-stream");
    }
}
