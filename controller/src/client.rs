//! A client of the haswarmd API over a unix socket or TCP (with a bearer
//! token), used by `haswarmctl`, tests and benchmarks.

use std::path::PathBuf;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
pub use hyper::Method;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::api::types::{
    ApplyRequest, ApplyResponse, ErrorBody, FinalizersUpdate, List, NewEvent, Reason, StatusUpdate,
    API_PREFIX,
};
use crate::config::env;

/// Where the daemon is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket path.
    Unix(PathBuf),
    /// `host:port`, with the bearer token to send.
    Tcp {
        /// `host:port`.
        authority: String,
        /// Bearer token.
        token: Option<String>,
    },
}

impl Endpoint {
    /// Parses `unix:///path`, an absolute or `./` path, or `http://host:port`.
    ///
    /// # Errors
    /// A message naming the accepted forms.
    pub fn parse(server: &str, token: Option<String>) -> Result<Self, ClientError> {
        if let Some(p) = server.strip_prefix("unix://") {
            return Ok(Self::Unix(PathBuf::from(p)));
        }
        if server.starts_with('/') || server.starts_with("./") || server.starts_with(".haswarm") {
            return Ok(Self::Unix(PathBuf::from(server)));
        }
        if let Some(a) = server.strip_prefix("http://") {
            let authority = a.trim_end_matches('/').to_owned();
            if !authority.is_empty() {
                return Ok(Self::Tcp { authority, token });
            }
        }
        Err(ClientError::BadServer(server.to_owned()))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Tcp { authority, .. } => write!(f, "http://{authority}"),
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon answers at the endpoint.
    #[error("no haswarmd answers at {server} ({source}).\nStart one with `haswarmd` (it listens on unix://{} unless given --socket), or point haswarmctl at a running one with --server or {}.", crate::config::default_socket().display(), env::SERVER)]
    Unreachable {
        /// The endpoint tried.
        server: String,
        /// The connection error.
        #[source]
        source: std::io::Error,
    },
    /// The `--server` value is malformed.
    #[error("invalid server address {0:?}: use unix:///path/to/haswarm.sock or http://host:port")]
    BadServer(String),
    /// The API answered with an error.
    #[error("{}", .body.message)]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The error body.
        body: ErrorBody,
    },
    /// The connection broke or the answer was not what the API sends.
    #[error("talking to haswarmd at {server}: {message}")]
    Protocol {
        /// The endpoint.
        server: String,
        /// What went wrong.
        message: String,
    },
}

impl ClientError {
    /// The API's machine-readable reason, for API errors.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Self::Api { body, .. } => Some(body.reason),
            _ => None,
        }
    }
}

/// A client; it keeps one connection open and reconnects when needed.
#[derive(Debug)]
pub struct Client {
    endpoint: Endpoint,
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

type Response = hyper::Response<hyper::body::Incoming>;

impl Client {
    /// A client for `endpoint`; nothing is connected until the first request.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            conn: Mutex::new(None),
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn protocol(&self, message: impl Into<String>) -> ClientError {
        ClientError::Protocol {
            server: self.endpoint.to_string(),
            message: message.into(),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            server: self.endpoint.to_string(),
            source,
        };
        let (sender, conn) = match &self.endpoint {
            Endpoint::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(unreachable)?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                    .await
                    .map_err(|e| self.protocol(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                return Ok(sender);
            }
            Endpoint::Tcp { authority, .. } => {
                let s = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .map_err(unreachable)?;
                let _ = s.set_nodelay(true);
                hyper::client::conn::http1::handshake(TokioIo::new(s))
                    .await
                    .map_err(|e| self.protocol(e.to_string()))?
            }
        };
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "haswarmd",
            Endpoint::Tcp { authority, .. } => authority.as_str(),
        };
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host);
        if let Endpoint::Tcp { token: Some(t), .. } = &self.endpoint {
            b = b.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            b = b.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        b.body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.protocol(e.to_string()))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        let mut guard = self.conn.lock().await;
        // A kept connection may have been closed by the server; one retry on a
        // fresh connection covers that without repeating requests that reached it.
        for attempt in 0..2 {
            let reuse = guard.as_ref().is_some_and(|s| !s.is_closed());
            if !reuse {
                *guard = Some(self.connect().await?);
            }
            let Some(sender) = guard.as_mut() else {
                continue;
            };
            if sender.ready().await.is_err() {
                *guard = None;
                continue;
            }
            let req = self.request(method.clone(), path, body.clone())?;
            match sender.send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(e) if reuse && attempt == 0 && e.is_canceled() => *guard = None,
                Err(e) => return Err(self.protocol(e.to_string())),
            }
        }
        Err(self.protocol("the connection closed twice"))
    }

    async fn error_of(&self, resp: Response) -> ClientError {
        let status = resp.status();
        let bytes = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return self.protocol(e.to_string()),
        };
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => ClientError::Api { status, body },
            Err(_) => self.protocol(format!("{status}: {}", String::from_utf8_lossy(&bytes))),
        }
    }

    /// Sends a request and decodes a JSON answer.
    ///
    /// # Errors
    /// [`ClientError`]: unreachable daemon, API error, or protocol failure.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| self.protocol(e.to_string()))?;
        let resp = self.send(method, path, body).await?;
        if !resp.status().is_success() {
            return Err(self.error_of(resp).await);
        }
        let bytes = self.body(resp).await?;
        if bytes.is_empty() {
            return serde_json::from_value(Value::Null).map_err(|e| self.protocol(e.to_string()));
        }
        serde_json::from_slice(&bytes).map_err(|e| self.protocol(format!("unexpected answer: {e}")))
    }

    /// A probe (`/livez`, `/readyz`): the status code and the text answer.
    ///
    /// # Errors
    /// [`ClientError`] when the daemon cannot be reached or the answer is cut.
    pub async fn probe(&self, path: &str) -> Result<(u16, String), ClientError> {
        let resp = self.send(Method::GET, path, None).await?;
        let code = resp.status().as_u16();
        let bytes = self.body(resp).await?;
        Ok((code, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// The whole body of an answer.
    async fn body(&self, resp: Response) -> Result<Bytes, ClientError> {
        Ok(resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e.to_string()))?
            .to_bytes())
    }

    /// Applies manifests as one unit.
    ///
    /// # Errors
    /// [`ClientError`]; an `Invalid` API error lists every problem in its details.
    pub async fn apply(
        &self,
        items: Vec<Value>,
        dry_run: bool,
    ) -> Result<ApplyResponse, ClientError> {
        let path = format!(
            "{API_PREFIX}/apply{}",
            if dry_run { "?dryRun=true" } else { "" }
        );
        self.call(Method::POST, &path, Some(&ApplyRequest { items }))
            .await
    }

    /// One object.
    ///
    /// # Errors
    /// [`ClientError`], `NotFound` when missing.
    pub async fn get(&self, plural: &str, name: &str) -> Result<Value, ClientError> {
        self.call(
            Method::GET,
            &format!("{API_PREFIX}/{plural}/{name}"),
            None::<&()>,
        )
        .await
    }

    /// Objects of a kind matching a label selector.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list(&self, plural: &str, selector: Option<&str>) -> Result<List, ClientError> {
        let path = match selector {
            Some(s) => format!("{API_PREFIX}/{plural}?labelSelector={}", encode_query(s)),
            None => format!("{API_PREFIX}/{plural}"),
        };
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// Deletes an object; the answer says whether it is gone (200) or terminating (202).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn delete(
        &self,
        plural: &str,
        name: &str,
        resource_version: Option<u64>,
    ) -> Result<Value, ClientError> {
        let path = match resource_version {
            Some(rv) => format!("{API_PREFIX}/{plural}/{name}?resourceVersion={rv}"),
            None => format!("{API_PREFIX}/{plural}/{name}"),
        };
        self.call(Method::DELETE, &path, None::<&()>).await
    }

    /// Replaces an object (conditional when the manifest carries `metadata.resourceVersion`).
    ///
    /// # Errors
    /// [`ClientError`], `Conflict` when stale.
    pub async fn replace(
        &self,
        plural: &str,
        name: &str,
        manifest: &Value,
    ) -> Result<Value, ClientError> {
        self.call(
            Method::PUT,
            &format!("{API_PREFIX}/{plural}/{name}"),
            Some(manifest),
        )
        .await
    }

    /// An object's events.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn events(
        &self,
        plural: &str,
        name: &str,
    ) -> Result<Vec<haswarm_crds::Event>, ClientError> {
        self.call(
            Method::GET,
            &format!("{API_PREFIX}/{plural}/{name}/events"),
            None::<&()>,
        )
        .await
    }

    /// Records an event.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn add_event(
        &self,
        plural: &str,
        name: &str,
        event: &NewEvent,
    ) -> Result<(), ClientError> {
        self.call::<Value>(
            Method::POST,
            &format!("{API_PREFIX}/{plural}/{name}/events"),
            Some(event),
        )
        .await
        .map(|_| ())
    }

    /// Writes the status subresource.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn write_status(
        &self,
        plural: &str,
        name: &str,
        update: &StatusUpdate,
    ) -> Result<Value, ClientError> {
        self.call(
            Method::PUT,
            &format!("{API_PREFIX}/{plural}/{name}/status"),
            Some(update),
        )
        .await
    }

    /// Writes the finalizers.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn write_finalizers(
        &self,
        plural: &str,
        name: &str,
        update: &FinalizersUpdate,
    ) -> Result<Value, ClientError> {
        self.call(
            Method::PUT,
            &format!("{API_PREFIX}/{plural}/{name}/finalizers"),
            Some(update),
        )
        .await
    }

    /// Streams changes of a kind as JSON values (`{"type": ..., "object": ...}`),
    /// on a connection of its own.
    ///
    /// # Errors
    /// [`ClientError`] for the request; the stream yields errors for broken lines.
    pub async fn watch(
        &self,
        plural: &str,
        selector: Option<&str>,
        resource_version: Option<u64>,
    ) -> Result<impl Stream<Item = Result<Value, ClientError>> + Send + 'static, ClientError> {
        let mut path = format!("{API_PREFIX}/{plural}?watch=true");
        if let Some(s) = selector {
            path.push_str(&format!("&labelSelector={}", encode_query(s)));
        }
        if let Some(rv) = resource_version {
            path.push_str(&format!("&resourceVersion={rv}"));
        }
        let mut sender = self.connect().await?;
        let req = self.request(Method::GET, &path, None)?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.protocol(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(self.error_of(resp).await);
        }
        let server = self.endpoint.to_string();
        let frames = resp.into_body().into_data_stream();
        let lines = futures::stream::unfold(
            (frames, Vec::<u8>::new(), server, sender),
            |(mut frames, mut buf, server, sender)| async move {
                loop {
                    if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=i).collect();
                        let item = serde_json::from_slice::<Value>(&line).map_err(|e| {
                            ClientError::Protocol {
                                server: server.clone(),
                                message: format!("bad watch line: {e}"),
                            }
                        });
                        return Some((item, (frames, buf, server, sender)));
                    }
                    match frames.next().await {
                        Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                        Some(Err(e)) => {
                            let err = ClientError::Protocol {
                                server: server.clone(),
                                message: e.to_string(),
                            };
                            return Some((Err(err), (frames, Vec::new(), server, sender)));
                        }
                        None => return None,
                    }
                }
            },
        );
        Ok(lines.boxed())
    }
}

/// Percent-encodes a query value (label selectors hold `=`, `!` and `,`).
fn encode_query(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("unix:///run/h.sock", None).ok(),
            Some(Endpoint::Unix("/run/h.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("/run/h.sock", None).ok(),
            Some(Endpoint::Unix("/run/h.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:7443/", Some("t".into())).ok(),
            Some(Endpoint::Tcp {
                authority: "127.0.0.1:7443".into(),
                token: Some("t".into())
            })
        );
        assert!(Endpoint::parse("ftp://x", None).is_err());
    }

    #[test]
    fn selectors_are_encoded() {
        assert_eq!(encode_query("app=dify,tier!=x"), "app%3Ddify%2Ctier%21%3Dx");
    }
}
