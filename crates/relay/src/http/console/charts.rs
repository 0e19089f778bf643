//! Charts of this relay process's last hour or day: pushes and inbound messages per minute,
//! push latency percentiles, failed pushes by reason (the metrics' [`Timeline`]), drawn in the
//! browser with uPlot.
//!
//! [`Timeline`]: crate::metrics::Timeline

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{PreEscaped, html};
use serde::Deserialize;

use super::auth::Session;
use super::view;
use crate::http::RelayState;

/// `?range=hour|day`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Range {
    range: Option<String>,
}

impl Range {
    fn minutes(&self) -> usize {
        match self.range.as_deref() {
            Some("day") => 24 * 60,
            _ => 60,
        }
    }
}

/// `GET /console/charts/data`: the series as JSON.
pub(super) async fn data(
    State(state): State<Arc<RelayState>>,
    _session: Session,
    Query(r): Query<Range>,
) -> Response {
    Json(state.sessions.metrics.timeline.series(r.minutes())).into_response()
}

/// Draws the three charts from `/console/charts/data` and redraws them every 30 s.
const SCRIPT: &str = r#"
const palette = ['#c62828', '#6a1b9a', '#ef6c00', '#00838f', '#4e342e', '#37474f'];
async function draw() {
  const range = document.getElementById('range').value;
  const r = await fetch('/console/charts/data?range=' + range, {credentials: 'same-origin'});
  const d = await r.json();
  const width = Math.max(400, Math.min(1300, document.querySelector('main').clientWidth - 20));
  const chart = (id, title, series, data) => {
    const el = document.getElementById(id);
    el.innerHTML = '';
    new uPlot({title, width, height: 220, series: [{}, ...series], axes: [{}, {size: 70}]},
      [d.t, ...data], el);
  };
  chart('rate', 'Per minute', [
    {label: 'pushes', stroke: '#1565c0'},
    {label: 'inbound messages', stroke: '#2e7d32'},
  ], [d.pushes, d.inbound]);
  chart('latency', 'Push latency, ms (upper bound of a doubling bucket)', [
    {label: 'p50', stroke: '#2e7d32'},
    {label: 'p95', stroke: '#f9a825'},
    {label: 'p99', stroke: '#c62828'},
  ], [d.p50, d.p95, d.p99]);
  const reasons = Object.keys(d.errors);
  chart('errors', 'Failed pushes by reason, per minute',
    reasons.map((r, i) => ({label: r, stroke: palette[i % palette.length]})),
    reasons.map(r => d.errors[r]));
  document.body.dataset.charts = 'drawn';
  document.getElementById('totals').textContent =
    d.pushes.reduce((a, b) => a + b, 0) + ' pushes, ' +
    d.inbound.reduce((a, b) => a + b, 0) + ' inbound messages, ' +
    reasons.reduce((a, r) => a + d.errors[r].reduce((x, y) => x + y, 0), 0) + ' failed pushes in this range.';
}
document.getElementById('range').addEventListener('change', draw);
draw();
setInterval(draw, 30000);
"#;

/// `GET /console/charts`.
pub(super) async fn page(State(_state): State<Arc<RelayState>>, session: Session) -> Response {
    let body = html! {
        h1 { "Charts" }
        p.summary {
            "This relay process, minute by minute. "
            select #range { option value="hour" { "last hour" } option value="day" { "last day" } }
            " " span #totals {}
        }
        link rel="stylesheet" href="/console/assets/uPlot.min.css";
        script src="/console/assets/uPlot.iife.min.js" {}
        div #rate {}
        div #latency {}
        div #errors {}
        script { (PreEscaped(SCRIPT)) }
    };
    view::page("Charts", Some(&session.csrf), "Charts", &body).into_response()
}
