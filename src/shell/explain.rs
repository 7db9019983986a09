//! The scheduler's `GET /explain/NAMESPACE/NAME` endpoint. The scheduling
//! loop owns the state, so a request travels to it over a channel and the
//! explanation comes back on a oneshot: it sees the live queue and holds.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};

use phalanx_core::explain::{ExplainError, GangExplanation, Target, render_gang};

/// One question for the scheduling loop.
pub struct ExplainRequest {
    pub target: Target,
    pub reply: oneshot::Sender<Result<GangExplanation, ExplainError>>,
}

/// Requests waiting for the loop: a few, since each is answered between two rounds.
const PENDING_REQUESTS: usize = 16;

pub fn channel() -> (mpsc::Sender<ExplainRequest>, mpsc::Receiver<ExplainRequest>) {
    mpsc::channel(PENDING_REQUESTS)
}

/// Asks the loop and waits for its answer.
pub async fn ask(requests: &mpsc::Sender<ExplainRequest>, target: Target) -> Result<GangExplanation, ExplainError> {
    let (reply, answer) = oneshot::channel();
    requests.send(ExplainRequest { target, reply }).await.map_err(|_| ExplainError::Stopped)?;
    answer.await.map_err(|_| ExplainError::Stopped)?
}

/// JSON when `?format=json` or `Accept: application/json`, text otherwise.
fn wants_json(uri: &Uri, headers: &HeaderMap) -> bool {
    let query = uri.query().unwrap_or_default();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    query.split('&').any(|p| p == "format=json") || accept.contains("application/json")
}

pub async fn handle(
    State(requests): State<Option<mpsc::Sender<ExplainRequest>>>,
    Path(target): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(requests) = requests else {
        return (StatusCode::NOT_FOUND, "explain is not served by this process\n").into_response();
    };
    let answer = match target.parse::<Target>() {
        Ok(target) => ask(&requests, target).await,
        Err(e) => Err(e),
    };
    let explanation = match answer {
        Ok(explanation) => explanation,
        Err(e) => {
            let status = match e {
                ExplainError::BadTarget(_) => StatusCode::BAD_REQUEST,
                ExplainError::NotFound(_) => StatusCode::NOT_FOUND,
                ExplainError::NotReady | ExplainError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            };
            return (status, format!("{e}\n")).into_response();
        }
    };
    if wants_json(&uri, &headers) {
        match serde_json::to_string_pretty(&explanation) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    } else {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], render_gang(&explanation)).into_response()
    }
}
