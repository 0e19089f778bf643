//! A rest-hook receiver: the endpoint of a FHIR Subscription, recording what it is sent.

use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::Value;
use tokio::sync::mpsc;

/// What a rest hook received: each POST's `Authorization` header (empty when absent) and its
/// JSON body (`null` when not JSON).
pub type Posts = mpsc::Receiver<(String, Value)>;

/// A rest-hook receiver on a listener bound to `127.0.0.1:0`, served by a task on the current
/// runtime: its URL (`http://127.0.0.1:PORT/fhir`) and what it receives. It answers every POST
/// with `{}`.
pub async fn rest_hook() -> (String, Posts) {
    let (tx, rx) = mpsc::channel(16);
    async fn hook(
        State(tx): State<mpsc::Sender<(String, Value)>>,
        headers: HeaderMap,
        body: String,
    ) -> &'static str {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let _ = tx
            .send((auth, serde_json::from_str(&body).unwrap_or(Value::Null)))
            .await;
        "{}"
    }
    let app = axum::Router::new()
        .route("/fhir", axum::routing::post(hook))
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/fhir", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}
