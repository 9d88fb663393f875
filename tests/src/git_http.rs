//! A git server over HTTP on loopback that wants Basic credentials: git's
//! own `git http-backend` (the CGI program git ships for smart HTTP) behind a
//! small server here, one thread per connection, one request per
//! connection. It serves the repositories under one folder, refuses every
//! request without the expected `Authorization` with 401, and counts both.
//! It stops when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine;

/// Requests seen, by outcome.
#[derive(Debug, Default)]
pub struct Counts {
    /// Requests served by git.
    pub served: AtomicUsize,
    /// Requests refused for want of credentials.
    pub refused: AtomicUsize,
    /// Requests refused for wrong credentials.
    pub wrong: AtomicUsize,
}

/// The running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves the repositories under `root` to clients that send
    /// `user:password` as Basic credentials.
    pub fn start(root: &Path, user: &str, password: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let root = root.to_path_buf();
        let (s, c) = (stop.clone(), counts.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, expected, c) = (root.clone(), expected.clone(), c.clone());
                std::thread::spawn(move || {
                    // A client that hangs up mid-request is no failure here.
                    let _ = serve(conn, &root, &expected, &c);
                });
            }
        });
        Self {
            addr,
            stop,
            counts,
            thread: Some(thread),
        }
    }

    /// The URL of repository `name` (a folder under the root).
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// What the server has seen.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A request's head.
struct Head {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Head> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let (path, query) = target
        .split_once('?')
        .map_or((target.clone(), String::new()), |(p, q)| {
            (p.to_owned(), q.to_owned())
        });
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok(Head {
        method,
        path,
        query,
        headers,
    })
}

/// The request body: by `Content-Length`, or chunked (git sends large
/// pushes and fetch negotiations chunked).
fn read_body(r: &mut impl BufRead, head: &Head) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head
        .header("Transfer-Encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = head.header("Content-Length") {
        let n: usize = n
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    }
    Ok(body)
}

fn serve(conn: TcpStream, root: &Path, expected: &str, counts: &Counts) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    let head = read_head(&mut r)?;
    let body = read_body(&mut r, &head)?;
    let given = head.header("Authorization");
    if given != Some(expected) {
        let count = if given.is_some() {
            &counts.wrong
        } else {
            &counts.refused
        };
        count.fetch_add(1, Ordering::SeqCst);
        return out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"haswarm test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let mut cgi = Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &head.method)
        .env("PATH_INFO", &head.path)
        .env("QUERY_STRING", &head.query)
        .env("CONTENT_TYPE", head.header("Content-Type").unwrap_or(""))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env(
            "HTTP_CONTENT_ENCODING",
            head.header("Content-Encoding").unwrap_or(""),
        )
        .env("GIT_PROTOCOL", head.header("Git-Protocol").unwrap_or(""))
        .env("REMOTE_USER", "haswarm-test")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = cgi.stdin.take() {
        stdin.write_all(&body)?;
    }
    let done = cgi.wait_with_output()?;
    counts.served.fetch_add(1, Ordering::SeqCst);
    // CGI output: headers (a `Status:` among them, or 200), a blank line,
    // the body.
    let split = done
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            done.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        })
        .unwrap_or((done.stdout.len(), done.stdout.len()));
    let cgi_head = String::from_utf8_lossy(&done.stdout[..split.0]).into_owned();
    let mut status = "200 OK".to_owned();
    let mut headers = String::new();
    for line in cgi_head.lines() {
        match line.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("Status") => status = v.trim().to_owned(),
            Some(_) => {
                headers.push_str(line.trim_end());
                headers.push_str("\r\n");
            }
            None => {}
        }
    }
    let payload = &done.stdout[split.1..];
    write!(
        out,
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    )?;
    out.write_all(payload)
}

/// A bare copy of `repo` under `root` named `name`, for the server to serve
/// (later commits reach it with `git push <bare> main`).
pub fn publish(repo: &Path, root: &Path, name: &str) -> PathBuf {
    let bare = root.join(name);
    crate::run_ok(
        Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(repo)
            .arg(&bare),
        "git clone --bare",
    );
    bare
}
