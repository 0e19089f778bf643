//! A kept-alive HTTP/1.1 connection to the relay (hyper's client connection, no pool): what the
//! load generator's callers each hold, so the load generator spends little CPU of its own.

use std::future::poll_fn;
use std::pin::Pin;

use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

/// One connection to the relay, reused for every request.
pub struct Http {
    sender: SendRequest<String>,
    host: String,
}

/// An answer: status code and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text (lossy).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

/// `http://host:port/` → `host:port`.
pub fn authority(base_url: &str) -> &str {
    base_url.trim_start_matches("http://").trim_end_matches('/')
}

impl Http {
    /// Connects to the relay at `base_url` (`http://host:port/`), with `TCP_NODELAY`.
    pub async fn connect(base_url: &str) -> Result<Http, String> {
        let host = authority(base_url).to_owned();
        let stream = tokio::net::TcpStream::connect(&host)
            .await
            .map_err(|e| format!("cannot connect to {host}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {host}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Http { sender, host })
    }

    /// Sends one request and reads the whole answer.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> Result<Answer, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(body).map_err(|e| e.to_string())?;
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection to the relay: {e}"))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status().as_u16();
        let body = read_body(resp.into_body()).await?;
        Ok(Answer { status, body })
    }
}

async fn read_body(mut body: Incoming) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| format!("reading the answer: {e}"))?;
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// An access token for `client_id` (client credentials).
pub async fn token(base_url: &str, client_id: &str, secret: &str) -> Result<String, String> {
    let mut http = Http::connect(base_url).await?;
    let form =
        format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}");
    let answer = http
        .request(
            Method::POST,
            "/oauth2/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            form,
        )
        .await?;
    let v: serde_json::Value = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("token answer {}: {e}: {}", answer.status, answer.text()))?;
    v["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no access_token in {v}"))
}
