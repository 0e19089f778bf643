//! An access token from a relay.

/// An access token from the relay at `base` (ending in `/`) for client credentials.
pub async fn token(base: &str, client_id: &str, secret: &str) -> String {
    let r: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token for {client_id}: {r}"))
        .to_owned()
}
