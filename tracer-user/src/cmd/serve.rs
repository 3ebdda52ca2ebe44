//! `--prometheus ADDR`: the window's metrics served over HTTP while it runs. The session
//! renders them from the model once a second (a [`Watch`]); a plain thread answers
//! `GET /metrics` with the latest rendering (the tracer spawns no tokio task of its own,
//! and a scrape never waits on the model).

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    cmd::session::{Control, Watch, Watched},
    error::{Error, Result},
    report::{
        Report,
        metrics::{Counters, View, render_metrics},
    },
};

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// How often the metrics are rendered from the model.
const RENDER_EVERY_NS: u64 = 1_000_000_000;

/// An HTTP answer: status line, content type, body.
pub struct Answer {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn ok(content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status: "200 OK",
            content_type,
            body,
        }
    }

    pub fn error(status: &'static str, msg: String) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: msg.into_bytes(),
        }
    }
}

pub const OPENMETRICS: &str = CONTENT_TYPE;

/// Binds `addr` now (a taken or bad address fails before anything attaches) and answers
/// every request on a thread of its own with `route(path, query)`.
pub fn listen(
    addr: &str,
    route: impl Fn(&str, &str) -> Answer + Send + Sync + 'static,
) -> Result<SocketAddr> {
    let err = |err| Error::Listen {
        addr: addr.to_owned(),
        err,
    };
    let listener = TcpListener::bind(addr).map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    let route = Arc::new(route);
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                // One thread per connection: a slow request (a report) holds up no scrape.
                let route = route.clone();
                let _ = std::thread::Builder::new()
                    .name("http-conn".into())
                    .spawn(move || answer(conn, &*route));
            }
        })
        .map_err(err)?;
    Ok(bound)
}

/// Serves the latest metrics text on `addr` until the process ends.
pub struct MetricsServer {
    latest: Arc<Mutex<String>>,
    pub addr: SocketAddr,
}

impl MetricsServer {
    pub fn start(addr: &str) -> Result<Self> {
        let latest = Arc::new(Mutex::new(String::from("# EOF\n")));
        let shared = latest.clone();
        let addr = listen(addr, move |path, _| match path {
            "/metrics" => Answer::ok(
                CONTENT_TYPE,
                shared
                    .lock()
                    .map(|s| s.clone())
                    .unwrap_or_default()
                    .into_bytes(),
            ),
            _ => Answer::error(
                "404 Not Found",
                "not found: tasktrace serves /metrics\n".into(),
            ),
        })?;
        Ok(Self { latest, addr })
    }

    fn set(&self, text: String) {
        if let Ok(mut l) = self.latest.lock() {
            *l = text;
        }
    }
}

/// One request, one answer, then the connection closes (what a scraper needs).
fn answer(conn: TcpStream, route: &dyn Fn(&str, &str) -> Answer) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers, up to the blank line (a request has no body we read).
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let target = request.split_whitespace().nth(1).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let a = route(path, query);
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        a.status,
        a.content_type,
        a.body.len()
    )?;
    conn.write_all(&a.body)
}

/// Renders the model's metrics for the server once a second.
pub struct MetricsWatch {
    server: MetricsServer,
    last_ns: u64,
}

impl MetricsWatch {
    pub fn new(server: MetricsServer) -> Self {
        Self { server, last_ns: 0 }
    }
}

impl Watch for MetricsWatch {
    fn tick(&mut self, now: &Watched<'_>) -> Control {
        if now.now_ns.saturating_sub(self.last_ns) >= RENDER_EVERY_NS {
            self.last_ns = now.now_ns;
            let view = now.agg.now(now.now_ns);
            self.server.set(render_metrics(
                &[View {
                    now: &view,
                    target: &now.meta.target,
                    counters: Counters {
                        probe_hits: now.events,
                        lost_events: now.lost,
                    },
                }],
                &Default::default(),
            ));
        }
        Control::Go
    }

    fn saved(&mut self, _: Report) {}
}
