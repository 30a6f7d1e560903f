//! Machine-readable state of the sessions: one JSON object per stats interval
//! (`--stats-format json`) and a Prometheus text endpoint (`--metrics ADDR`).
//!
//! The endpoint is a tiny HTTP/1.0 responder on a thread of its own: every request, whatever
//! its path, gets the current metrics (`text/plain; version=0.0.4`) and the connection is
//! closed. Metric names (all with HELP and TYPE lines):
//!
//! | name | type | labels |
//! |------|------|--------|
//! | `mtmux_sessions` | gauge | |
//! | `mtmux_session_streams` | gauge | session |
//! | `mtmux_session_outage_seconds` | gauge | session |
//! | `mtmux_session_resumes_total` | counter | session |
//! | `mtmux_tunnel_bytes_sent_total`, `mtmux_tunnel_bytes_received_total` | counter | session, tunnel |
//! | `mtmux_tunnel_frames_sent_total`, `mtmux_tunnel_frames_received_total` | counter | session, tunnel |
//! | `mtmux_tunnel_frames_resent_total`, `mtmux_tunnel_bytes_resent_total` | counter | session, tunnel |
//! | `mtmux_tunnel_rejoins_total` | counter | session, tunnel |
//! | `mtmux_tunnel_up` | gauge (1 live, 0 not) | session, tunnel, state |
//! | `mtmux_tunnel_rtt_seconds` | gauge | session, tunnel |

use crate::{spawn, Fatal};
use log::{debug, info, warn};
use mtmux::{Session, TunnelStats};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The sessions to report, by number (a closure over the server's or client's state).
pub type Sessions = Arc<dyn Fn() -> Vec<(u64, Session)> + Send + Sync>;

/// One JSON object for all `sessions`: `{"time": ..., "role": ..., "sessions": [...]}`.
pub fn json_snapshot(role: &str, sessions: &[(u64, Session)]) -> Value {
    let time = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let sessions: Vec<Value> = sessions
        .iter()
        .map(|(id, s)| {
            let st = s.stats();
            json!({
                "session": id,
                "streams": s.num_streams(),
                "outage_s": st.outage.map(|d| d.as_secs_f64()),
                "resumes": st.resumes,
                "tunnels": st.tunnels.iter().map(tunnel_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "time": time, "role": role, "sessions": sessions })
}

fn tunnel_json(t: &TunnelStats) -> Value {
    json!({
        "index": t.index,
        "state": t.state.to_string(),
        "bytes_sent": t.bytes_sent,
        "bytes_received": t.bytes_received,
        "frames_sent": t.frames_sent,
        "frames_received": t.frames_received,
        "frames_resent": t.frames_resent,
        "bytes_resent": t.bytes_resent,
        "rejoins": t.rejoins,
        "rtt_s": t.rtt.map(|d| d.as_secs_f64()),
    })
}

/// What a JSON stats line compares to decide whether anything changed (the time and the
/// round trips aside).
pub fn activity(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("time");
    }
    if let Some(sessions) = v.get_mut("sessions").and_then(Value::as_array_mut) {
        for s in sessions {
            if let Some(ts) = s.get_mut("tunnels").and_then(Value::as_array_mut) {
                for t in ts {
                    if let Some(o) = t.as_object_mut() {
                        o.remove("rtt_s");
                    }
                }
            }
        }
    }
    v
}

/// Write a JSON object per `every` to `file` (or standard output), only when something
/// changed since the previous one. Runs for ever: call it on a thread.
pub fn json_stats_loop(role: &str, sessions: Sessions, every: Duration, file: Option<PathBuf>) {
    let mut last: Option<Value> = None;
    loop {
        std::thread::sleep(every);
        let snap = json_snapshot(role, &sessions());
        let act = activity(&snap);
        if last.as_ref() == Some(&act) {
            continue;
        }
        last = Some(act);
        let line = format!("{snap}\n");
        let written = match &file {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes())),
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes()).and_then(|_| out.flush())
            }
        };
        if let Err(e) = written {
            warn!("cannot write stats: {e}");
        }
    }
}

/// The Prometheus text exposition of `sessions`.
pub fn prometheus(sessions: &[(u64, Session)]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    family("mtmux_sessions", "gauge", "Sessions up.", vec![(String::new(), sessions.len() as f64)]);
    let stats: Vec<_> = sessions.iter().map(|(id, s)| (*id, s.num_streams(), s.stats())).collect();
    let per_session = |f: &dyn Fn(usize, &mtmux::SessionStats) -> f64| {
        stats.iter().map(|(id, n, st)| (format!("{{session=\"{id}\"}}"), f(*n, st))).collect()
    };
    family("mtmux_session_streams", "gauge", "Streams open in the session.", per_session(&|n, _| n as f64));
    family(
        "mtmux_session_outage_seconds",
        "gauge",
        "How long the session has had no live tunnel (0: none).",
        per_session(&|_, st| st.outage.map_or(0.0, |d| d.as_secs_f64())),
    );
    family(
        "mtmux_session_resumes_total",
        "counter",
        "Outages the session survived.",
        per_session(&|_, st| st.resumes as f64),
    );
    let per_tunnel = |f: &dyn Fn(&TunnelStats) -> Option<f64>| {
        let mut v = Vec::new();
        for (id, _, st) in &stats {
            for t in &st.tunnels {
                if let Some(x) = f(t) {
                    v.push((format!("{{session=\"{id}\",tunnel=\"{}\"}}", t.index), x));
                }
            }
        }
        v
    };
    type Field = fn(&TunnelStats) -> u64;
    let counters: [(&str, &str, Field); 7] = [
        ("mtmux_tunnel_bytes_sent_total", "Bytes sent on the tunnel.", |t| t.bytes_sent),
        ("mtmux_tunnel_bytes_received_total", "Bytes received on the tunnel.", |t| t.bytes_received),
        ("mtmux_tunnel_frames_sent_total", "Frames sent on the tunnel.", |t| t.frames_sent),
        ("mtmux_tunnel_frames_received_total", "Frames received on the tunnel.", |t| t.frames_received),
        (
            "mtmux_tunnel_frames_resent_total",
            "Frames re-sent on other tunnels after this one failed or stalled.",
            |t| t.frames_resent,
        ),
        (
            "mtmux_tunnel_bytes_resent_total",
            "Bytes re-sent on other tunnels after this one failed or stalled.",
            |t| t.bytes_resent,
        ),
        ("mtmux_tunnel_rejoins_total", "Times the tunnel was re-joined.", |t| t.rejoins),
    ];
    for (name, help, f) in counters {
        family(name, "counter", help, per_tunnel(&|t| Some(f(t) as f64)));
    }
    let mut up = Vec::new();
    for (id, _, st) in &stats {
        for t in &st.tunnels {
            let live = matches!(t.state, mtmux::TunnelState::Live);
            up.push((
                format!("{{session=\"{id}\",tunnel=\"{}\",state=\"{}\"}}", t.index, t.state),
                if live { 1.0 } else { 0.0 },
            ));
        }
    }
    family("mtmux_tunnel_up", "gauge", "1 when the tunnel is live; its state as a label.", up);
    family(
        "mtmux_tunnel_rtt_seconds",
        "gauge",
        "Smoothed round-trip time of the tunnel.",
        per_tunnel(&|t| t.rtt.map(|d| d.as_secs_f64())),
    );
    out
}

/// Bind `addr` and answer every HTTP request on it with [`prometheus`] of `sessions`.
pub fn serve(addr: &str, sessions: Sessions) -> Result<(), Fatal> {
    let l = TcpListener::bind(addr).map_err(|e| Fatal::new(format!("--metrics {addr}: {e}")))?;
    let bound = l.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.into());
    info!("metrics on http://{bound}/metrics");
    spawn("metrics", move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            // One request at a time, bounded: a client that says nothing is dropped.
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
            let mut req = [0u8; 4096];
            let mut got = 0;
            while got < req.len() {
                match conn.read(&mut req[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(_) => break,
                }
                if req[..got].windows(4).any(|w| w == b"\r\n\r\n")
                    || req[..got].windows(2).any(|w| w == b"\n\n")
                {
                    break;
                }
            }
            let body = prometheus(&sessions());
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if let Err(e) = conn.write_all(head.as_bytes()).and_then(|_| conn.write_all(body.as_bytes())) {
                debug!("metrics: {e}");
            }
        }
    });
    Ok(())
}
