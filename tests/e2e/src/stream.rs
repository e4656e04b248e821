//! Streaming exec through CRI's streaming server, as `kubectl exec -it` does it: a websocket
//! with the `v4.channel.k8s.io` protocol (one leading byte per message names the stream:
//! 0 stdin, 1 stdout, 2 stderr, 3 final status, 4 terminal size).
//!
//! containerd's streaming server listens on 127.0.0.1 in containerd's network namespace, so
//! the client runs on a thread that has joined that namespace.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

/// What came back.
#[derive(Debug, Clone, Default)]
pub struct StreamResult {
    /// stdout (with a terminal: everything).
    pub stdout: Vec<u8>,
    /// The final status object (JSON), e.g. `{"status":"Failure",...,"reason":"NonZeroExitCode",...}`.
    pub status: String,
}

/// Connects to `url` from inside network namespace `netns`, sends a terminal size, then each
/// stdin chunk (200 ms apart), and reads until the server closes or `limit` passes.
pub fn exec(
    netns: &str,
    url: &str,
    size: Option<(u16, u16)>,
    stdin: &[&[u8]],
    limit: Duration,
) -> Result<StreamResult> {
    let (netns, url) = (netns.to_owned(), url.to_owned());
    let chunks: Vec<Vec<u8>> = stdin.iter().map(|c| c.to_vec()).collect();
    std::thread::spawn(move || -> Result<StreamResult> {
        let ns = std::fs::File::open(format!("/run/netns/{netns}"))?;
        // SAFETY: setns with a valid namespace descriptor; it affects this thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error())
                .context("join containerd's network namespace");
        }
        let mut req = url.replacen("http://", "ws://", 1).into_client_request()?;
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse()?);
        let (mut ws, _) = tungstenite::connect(req).context("websocket handshake")?;
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_read_timeout(Some(Duration::from_millis(200)))?;
        }
        let send = |ws: &mut tungstenite::WebSocket<_>, channel: u8, data: &[u8]| -> Result<()> {
            let mut m = vec![channel];
            m.extend_from_slice(data);
            ws.send(Message::Binary(m.into()))?;
            Ok(())
        };
        if let Some((w, h)) = size {
            send(
                &mut ws,
                4,
                format!(r#"{{"Width":{w},"Height":{h}}}"#).as_bytes(),
            )?;
        }
        let mut out = StreamResult::default();
        let deadline = Instant::now() + limit;
        let mut pending = chunks.into_iter();
        let mut next_send = Instant::now() + Duration::from_millis(300);
        loop {
            if Instant::now() >= next_send {
                if let Some(c) = pending.next() {
                    send(&mut ws, 0, &c)?;
                }
                next_send = Instant::now() + Duration::from_millis(200);
            }
            match ws.read() {
                Ok(Message::Binary(b)) if !b.is_empty() => match b[0] {
                    1 | 2 => out.stdout.extend_from_slice(&b[1..]),
                    3 => out.status.push_str(&String::from_utf8_lossy(&b[1..])),
                    _ => {}
                },
                Ok(Message::Close(_)) => break,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    break;
                }
                Err(e) => return Err(e.into()),
            }
            if Instant::now() > deadline {
                bail!(
                    "stream did not end; got so far: {:?}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        Ok(out)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("stream thread panicked"))?
}
