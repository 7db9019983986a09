//! Binds pods through `POST pods/{name}/binding`, carrying the pod's UID so a
//! pod deleted and recreated under the same name is never bound by mistake.
//! Calls run concurrently, paced by the client rate limiter; each outcome goes
//! back to the scheduling loop, which alone changes the snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::core::Status;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::metrics::Metrics;
use super::rate_limit::RateLimiter;
use crate::core::pod::PodKey;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindResult {
    Bound,
    /// The pod is gone (404): nothing to do.
    PodGone,
    /// 409: already bound, or the UID no longer matches. The watch tells the truth.
    Conflict(String),
    /// Anything else: the pod goes back to the queue.
    Failed(String),
}

#[derive(Debug)]
pub struct BindOutcome {
    pub uid: String,
    pub key: PodKey,
    pub node: String,
    pub result: BindResult,
}

#[derive(Clone)]
pub struct Binder {
    client: Client,
    limiter: Arc<RateLimiter>,
    outcomes: mpsc::UnboundedSender<BindOutcome>,
    metrics: Metrics,
    in_flight: Arc<AtomicUsize>,
}

impl Binder {
    pub fn new(
        client: Client,
        limiter: Arc<RateLimiter>,
        outcomes: mpsc::UnboundedSender<BindOutcome>,
        metrics: Metrics,
    ) -> Self {
        Self {
            client,
            limiter,
            outcomes,
            metrics,
            in_flight: Arc::default(),
        }
    }

    /// Waits until no bind is in flight, or `limit` has passed. Used at
    /// shutdown so that a bind already sent is not cut off half way.
    pub async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.in_flight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the bind in the background; the outcome arrives on the channel.
    pub fn bind(&self, uid: String, key: PodKey, node: String) {
        let this = self.clone();
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            this.limiter.acquire().await;
            let started = Instant::now();
            let result = this.post_binding(&uid, &key, &node).await;
            let label = match &result {
                BindResult::Bound => "bound",
                BindResult::PodGone => "gone",
                BindResult::Conflict(_) => "conflict",
                BindResult::Failed(_) => "error",
            };
            this.metrics
                .bind_duration
                .get_or_create(&super::metrics::ResultLabels {
                    result: label.into(),
                })
                .observe(started.elapsed().as_secs_f64());
            debug!(pod = %key, %node, ?result, "bind finished");
            // The loop only goes away at shutdown, when outcomes no longer matter.
            let _ = this.outcomes.send(BindOutcome {
                uid,
                key,
                node,
                result,
            });
            this.in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }

    async fn post_binding(&self, uid: &str, key: &PodKey, node: &str) -> BindResult {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(key.name.clone()),
                namespace: Some(key.namespace.clone()),
                uid: Some(uid.to_string()),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..Default::default()
            },
        };
        match api
            .create_subresource::<_, Status>("binding", &key.name, &PostParams::default(), &binding)
            .await
        {
            Ok(_) => BindResult::Bound,
            Err(kube::Error::Api(e)) if e.code == 404 => BindResult::PodGone,
            Err(kube::Error::Api(e)) if e.code == 409 => BindResult::Conflict(e.message.clone()),
            Err(e) => {
                warn!(pod = %key, %node, error = %e, "bind failed");
                BindResult::Failed(e.to_string())
            }
        }
    }
}
