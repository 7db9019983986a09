//! Evicts preemption victims through the Eviction API (`POST
//! pods/{name}/eviction`, policy/v1), with the pod's UID as a precondition so
//! that a pod recreated under the same name is never evicted by mistake. The
//! API server checks PodDisruptionBudgets and refuses (429) an eviction that
//! would break one (so the evictor's client does not retry 429s, unlike
//! kube's default). Calls run concurrently, paced by the binder's rate
//! limiter (evictions and binds are one budget of writes that decide where
//! pods run), each with the API server's timeout set as the binder's are
//! (until another replica may lead); each outcome goes back to the
//! scheduling loop.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta, Preconditions};
use kube::api::PostParams;
use kube::core::{Request, Status};
use kube::{Client, Resource};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::binder::{NOT_LEADING, retrying, send_before_handover};
use super::leader_election::Leadership;
use super::metrics::Metrics;
use super::rate_limit::RateLimiter;
use phalanx_core::pod::PodKey;
pub use phalanx_core::scheduler::{EvictOutcome, EvictResult};

/// The cause the API server gives when a budget refuses an eviction.
const BUDGET_CAUSE: &str = "DisruptionBudget";

#[derive(Clone)]
pub struct Evictor {
    client: Client,
    limiter: Arc<RateLimiter>,
    outcomes: mpsc::UnboundedSender<EvictOutcome>,
    metrics: Metrics,
    leadership: Leadership,
}

impl Evictor {
    /// The evictor has a client of its own, built from `config` without
    /// kube's default retry of 429s: a budget's refusal is an answer, which
    /// that retry would only repeat for minutes.
    pub fn new(
        mut config: kube::Config,
        limiter: Arc<RateLimiter>,
        outcomes: mpsc::UnboundedSender<EvictOutcome>,
        metrics: Metrics,
    ) -> Result<Self, kube::Error> {
        config.default_retry = false;
        Ok(Self { client: Client::try_from(config)?, limiter, outcomes, metrics, leadership: Leadership::always() })
    }

    /// Sends evictions only while `leadership` holds, checked right before each.
    pub fn gated_by(mut self, leadership: Leadership) -> Self {
        self.leadership = leadership;
        self
    }

    /// Starts the eviction in the background; the outcome arrives on the channel.
    pub fn evict(&self, uid: String, key: PodKey, preemptor: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let result = retrying(|| this.try_evict(&uid, &key), |r| matches!(r, EvictResult::Failed(_))).await;
            this.metrics.eviction(result.label());
            debug!(pod = %key, %preemptor, ?result, "eviction finished");
            // The loop only goes away at shutdown, when outcomes no longer matter.
            let _ = this.outcomes.send(EvictOutcome { uid, key, preemptor, result });
        });
    }

    async fn try_evict(&self, uid: &str, key: &PodKey) -> EvictResult {
        self.limiter.acquire().await;
        if !self.leadership.is_leading() {
            return EvictResult::NotSent(NOT_LEADING.into());
        }
        let body = match serde_json::to_vec(&eviction(uid, key)) {
            Ok(body) => body,
            Err(e) => return EvictResult::Failed(e.to_string()),
        };
        let pods = Request::new(Pod::url_path(&(), Some(&key.namespace)));
        let request = pods.create_subresource("eviction", &key.name, &PostParams::default(), body);
        match send_before_handover::<Status>(&self.client, &self.leadership, request).await {
            Ok(_) => EvictResult::Evicted,
            Err(e) => {
                let result = classify(e);
                if let EvictResult::Failed(why) = &result {
                    warn!(pod = %key, error = %why, "eviction failed");
                }
                result
            }
        }
    }
}

/// The request body: policy/v1 Eviction whose deletion holds only for `uid`.
pub fn eviction(uid: &str, key: &PodKey) -> Eviction {
    Eviction {
        metadata: ObjectMeta {
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            ..Default::default()
        },
        delete_options: Some(DeleteOptions {
            preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
            ..Default::default()
        }),
    }
}

/// What a refused eviction means. A 429 is a budget's refusal only when the
/// API server says so (a cause `DisruptionBudget`); otherwise it is the API
/// server's own throttling, and worth a retry. A 409 comes from the
/// preconditions: a UID that no longer matches means the victim is gone.
pub fn classify(error: kube::Error) -> EvictResult {
    let kube::Error::Api(status) = error else {
        return EvictResult::Failed(error.to_string());
    };
    let causes: Vec<&str> = status.details.iter().flat_map(|d| &d.causes).map(|c| c.message.as_str()).collect();
    let budget = status.details.iter().flat_map(|d| &d.causes).any(|c| c.reason == BUDGET_CAUSE);
    match status.code {
        404 => EvictResult::PodGone,
        409 if status.message.contains("UID") => EvictResult::PodGone,
        429 if budget || status.message.contains("disruption budget") => {
            let mut message = status.message.clone();
            for cause in causes.into_iter().filter(|c| !c.is_empty()) {
                message.push(' ');
                message.push_str(cause);
            }
            EvictResult::Blocked(message)
        }
        _ => EvictResult::Failed(format!("{} ({})", status.message, status.code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::leader_election::Term;
    use kube::core::response::{StatusCause, StatusDetails};

    #[tokio::test]
    async fn an_eviction_tells_the_api_server_to_give_up_before_another_replica_may_lead() {
        let uris = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = uris.clone();
        let api_server = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            seen.lock().unwrap().push(request.uri().to_string());
            let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
            let body = kube::client::Body::from(serde_json::to_vec(&status).unwrap());
            async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
        });
        let (publish, leadership) = Leadership::standby();
        let now = std::time::Instant::now();
        let handover = Some(now + std::time::Duration::from_secs(6));
        publish.send_replace(Some(Term { number: 1, until: Some(now + std::time::Duration::from_secs(4)), handover }));
        let (outcomes, _) = mpsc::unbounded_channel();
        let evictor = Evictor {
            client: Client::new(api_server, "default"),
            limiter: Arc::new(RateLimiter::new(100.0, 10)),
            outcomes,
            metrics: Metrics::register(&mut prometheus_client::registry::Registry::default()),
            leadership,
        };
        let key = PodKey { namespace: "ns".into(), name: "victim".into() };
        assert_eq!(evictor.try_evict("uid-1", &key).await, EvictResult::Evicted);
        let uris = uris.lock().unwrap();
        let timeout_ms: u64 = uris[0]
            .strip_prefix("/api/v1/namespaces/ns/pods/victim/eviction?timeout=")
            .and_then(|t| t.strip_suffix("ms"))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{uris:?}"));
        assert!((5_000..=6_000).contains(&timeout_ms), "{timeout_ms}");
    }

    fn api_error(code: u16, message: &str, causes: &[(&str, &str)]) -> kube::Error {
        let details = (!causes.is_empty()).then(|| StatusDetails {
            causes: causes
                .iter()
                .map(|(reason, message)| StatusCause {
                    reason: reason.to_string(),
                    message: message.to_string(),
                    field: String::new(),
                })
                .collect(),
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            retry_after_seconds: 0,
        });
        kube::Error::Api(Status { code, message: message.into(), details, ..Default::default() }.boxed())
    }

    #[test]
    fn a_budget_refusal_is_blocked_and_keeps_the_api_servers_words() {
        let refused = api_error(
            429,
            "Cannot evict pod as it would violate the pod's disruption budget.",
            &[(BUDGET_CAUSE, "The disruption budget train needs 4 healthy pods and has 4 currently")],
        );
        assert_eq!(
            classify(refused),
            EvictResult::Blocked(
                "Cannot evict pod as it would violate the pod's disruption budget. The disruption budget train needs 4 healthy pods and has 4 currently".into()
            )
        );
    }

    #[test]
    fn throttling_is_a_failure_to_retry_not_a_budget() {
        let throttled = api_error(429, "Too many requests, please try again later.", &[]);
        assert!(matches!(classify(throttled), EvictResult::Failed(m) if m.contains("(429)")));
    }

    #[test]
    fn a_missing_or_replaced_victim_is_gone() {
        assert_eq!(classify(api_error(404, "pods \"w-0\" not found", &[])), EvictResult::PodGone);
        let replaced = api_error(409, "Precondition failed: UID in precondition: a, UID in object meta: b", &[]);
        assert_eq!(classify(replaced), EvictResult::PodGone);
        let busy = api_error(409, "the object has been modified; please apply your changes to the latest version", &[]);
        assert!(matches!(classify(busy), EvictResult::Failed(_)), "a conflict on the budget is retried");
    }

    #[test]
    fn other_errors_fail() {
        let two_budgets = api_error(
            500,
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            &[],
        );
        assert!(matches!(classify(two_budgets), EvictResult::Failed(m) if m.contains("more than one")));
        assert_eq!(EvictResult::Blocked(String::new()).label(), "blocked");
    }

    #[test]
    fn the_request_is_a_policy_v1_eviction_with_the_uid_as_precondition() {
        let key = PodKey { namespace: "team-a".into(), name: "w-0".into() };
        let body = serde_json::to_value(eviction("u-1", &key)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": "w-0", "namespace": "team-a"},
                "deleteOptions": {"preconditions": {"uid": "u-1"}},
            })
        );
    }
}
