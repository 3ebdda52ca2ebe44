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
        metrics::{Counters, render_metrics},
    },
};

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// How often the metrics are rendered from the model.
const RENDER_EVERY_NS: u64 = 1_000_000_000;

/// Serves the latest metrics text on `addr` until the process ends.
pub struct MetricsServer {
    latest: Arc<Mutex<String>>,
    pub addr: SocketAddr,
}

impl MetricsServer {
    /// Binds now, so that a taken or bad address fails before anything attaches.
    pub fn start(addr: &str) -> Result<Self> {
        let listener = TcpListener::bind(addr).map_err(|err| Error::Listen {
            addr: addr.to_owned(),
            err,
        })?;
        let bound = listener.local_addr().map_err(|err| Error::Listen {
            addr: addr.to_owned(),
            err,
        })?;
        let latest = Arc::new(Mutex::new(String::from("# EOF\n")));
        let shared = latest.clone();
        std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let body = shared.lock().map(|s| s.clone()).unwrap_or_default();
                    let _ = answer(conn, &body);
                }
            })
            .map_err(|err| Error::Listen {
                addr: addr.to_owned(),
                err,
            })?;
        Ok(Self {
            latest,
            addr: bound,
        })
    }

    fn set(&self, text: String) {
        if let Ok(mut l) = self.latest.lock() {
            *l = text;
        }
    }
}

/// One request, one answer, then the connection closes (what a scraper needs).
fn answer(conn: TcpStream, body: &str) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers, up to the blank line (a request has no body we read).
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    let mut conn = conn;
    if path == "/metrics" {
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        let msg = "not found: tasktrace serves /metrics\n";
        write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
            msg.len()
        )
    }
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
                &view,
                &now.meta.target,
                Counters {
                    probe_hits: now.events,
                    lost_events: now.lost,
                },
            ));
        }
        Control::Go
    }

    fn saved(&mut self, _: Report) {}
}
