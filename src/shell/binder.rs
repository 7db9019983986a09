//! Binds pods through `POST pods/{name}/binding`, carrying the pod's UID so a
//! pod deleted and recreated under the same name is never bound by mistake.
//! Calls run concurrently, paced by the client rate limiter; each outcome goes
//! back to the scheduling loop, which alone changes the snapshot.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Binding, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::resource::v1::ResourceClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::Resource;
use kube::api::{GetParams, Patch, PatchParams, PostParams};
use kube::core::{Request, Status};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::leader_election::Leadership;
use super::metrics::Metrics;
use super::rate_limit::RateLimiter;
use phalanx_core::dra::inventory::{Allocates, ClaimWrite, Rebased};
use phalanx_core::pod::PodKey;
pub use phalanx_core::scheduler::{BindOutcome, BindResult, PreBind};
use phalanx_core::volume::VolumeWrite;
use phalanx_kube::dra_objects::{claim_finalizer_patch, claim_status_patch, device_claim};
use phalanx_kube::translate::{GPUS_ANNOTATION, gpu_annotation_value};
use phalanx_kube::volume_objects::{ClaimProgress, claim_progress, volume_write_patch};

/// Waits between attempts of a write (a bind, an eviction) that failed for a
/// reason worth another try.
const RETRY_DELAYS: [Duration; 3] = [Duration::from_millis(200), Duration::from_millis(800), Duration::from_secs(2)];

/// How often a claim shared with another member of the same pass is read
/// again before its reservation gives up, and the pause while its allocation
/// has not landed: the members' writes go out together, so a few seconds.
const SHARED_CLAIM_READS: usize = 12;
const SHARED_CLAIM_PAUSE: Duration = Duration::from_millis(250);

/// How long a bind waits for its volumes' claims to be bound, and how often
/// it looks (kube-scheduler's default `bindTimeoutSeconds` is 600).
const VOLUME_BIND_TIMEOUT: Duration = Duration::from_secs(600);
const VOLUME_POLL: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Binder {
    client: Client,
    limiter: Arc<RateLimiter>,
    outcomes: mpsc::UnboundedSender<BindOutcome>,
    metrics: Metrics,
    in_flight: Arc<AtomicUsize>,
    /// Nodes deleted since their binds were started. The API server binds a
    /// pod to a node that does not exist (and the pod is lost with it), so
    /// binds still waiting for their turn are not sent there.
    gone_nodes: Arc<Mutex<HashSet<String>>>,
    leadership: Leadership,
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
            gone_nodes: Arc::default(),
            leadership: Leadership::always(),
        }
    }

    /// Marks a node deleted (`gone`), or there again.
    pub fn set_node_gone(&self, node: &str, gone: bool) {
        let mut nodes = self.gone_nodes.lock().unwrap_or_else(|e| e.into_inner());
        if gone {
            nodes.insert(node.to_string());
        } else {
            nodes.remove(node);
        }
    }

    fn node_gone(&self, node: &str) -> bool {
        self.gone_nodes.lock().unwrap_or_else(|e| e.into_inner()).contains(node)
    }

    /// Sends calls only while `leadership` holds, checked right before each.
    pub fn gated_by(mut self, leadership: Leadership) -> Self {
        self.leadership = leadership;
        self
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
    /// GPU pods get their chosen GPUs recorded (`phalanx.dev/gpus`) by the
    /// same call.
    pub fn bind(&self, uid: String, key: PodKey, node: String, gpus: Vec<u32>, writes: PreBind) {
        let this = self.clone();
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let started = Instant::now();
            // A transient failure (a timeout, a 5xx, the API server restarting)
            // is retried here, so a gang's member keeps the place its gang was
            // given instead of going back to the queue on its own. Claims are
            // written first: the node's driver prepares what they record;
            // then volumes, and the bind waits until their claims are bound.
            let prepared = async {
                this.write_claims(&uid, &key, &writes.claims).await?;
                this.write_volumes(&key, &writes.volumes).await?;
                this.wait_for_volumes(&key, &writes.volumes).await
            };
            let result = match prepared.await {
                Err(refused) => refused,
                Ok(()) => {
                    retrying(|| this.post_binding(&uid, &key, &node, &gpus), |r| matches!(r, BindResult::Failed(_)))
                        .await
                }
            };
            let label = match &result {
                BindResult::Bound => "bound",
                BindResult::PodGone => "gone",
                BindResult::Conflict(_) => "conflict",
                BindResult::NodeGone => "node_gone",
                BindResult::Failed(_) => "error",
                BindResult::NotSent(_) => "not_sent",
            };
            this.metrics
                .bind_duration
                .get_or_create(&super::metrics::ResultLabels { result: label.into() })
                .observe(started.elapsed().as_secs_f64());
            debug!(pod = %key, %node, ?result, "bind finished");
            // The loop only goes away at shutdown, when outcomes no longer matter.
            let _ = this.outcomes.send(BindOutcome { uid, key, node, result });
            this.in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// Writes each claim's allocation (after its delete-protection
    /// finalizer) and the pod's reservation, each conditional on the claim's
    /// version; the first refusal fails the bind.
    async fn write_claims(&self, uid: &str, key: &PodKey, claims: &[ClaimWrite]) -> Result<(), BindResult> {
        let refused = |write: &ClaimWrite, e: &dyn std::fmt::Display| {
            warn!(pod = %key, claim = %write.key, error = %e, "claim write refused");
            BindResult::Failed(format!("ResourceClaim {}: {e}", write.key))
        };
        for write in claims {
            let claims = Request::new(ResourceClaim::url_path(&(), Some(&write.key.namespace)));
            let params = PatchParams::default();
            let mut version = write.resource_version.clone();
            if let Some(patch) = claim_finalizer_patch(write) {
                self.limiter.acquire().await;
                self.check_leading()?;
                let request = claims.patch(&write.key.name, &params, &Patch::Merge(patch));
                let patched: ResourceClaim = self.send(request).await.map_err(|e| refused(write, &e))?;
                version = patched.metadata.resource_version;
            }
            let Some(patch) = claim_status_patch(write, version.as_deref(), (&key.name, uid)) else { continue };
            match self.patch_status(write, patch).await? {
                Ok(()) => {}
                // Pods sharing a claim reserve it one after another, in whatever
                // order their binds run: read it again and add this one.
                Err(e) if write.allocates == Allocates::Existing => self
                    .reserve_again(uid, key, write)
                    .await
                    .map_err(|again| refused(write, &format!("{e}; {again}")))?,
                Err(e) => return Err(refused(write, &e)),
            }
        }
        Ok(())
    }

    /// Pre-binds volumes and asks provisioners for nodes, each write
    /// conditional on the version the choice was made from.
    async fn write_volumes(&self, key: &PodKey, writes: &[VolumeWrite]) -> Result<(), BindResult> {
        for write in writes {
            let patch = volume_write_patch(write);
            let params = PatchParams::default();
            let (object, request) = match write {
                VolumeWrite::BindVolume { volume, .. } => (
                    format!("PersistentVolume {volume}"),
                    Request::new(PersistentVolume::url_path(&(), None)).patch(volume, &params, &Patch::Merge(patch)),
                ),
                VolumeWrite::SelectNode { claim, .. } => (
                    format!("PersistentVolumeClaim {claim}"),
                    Request::new(PersistentVolumeClaim::url_path(&(), Some(&claim.namespace))).patch(
                        &claim.name,
                        &params,
                        &Patch::Merge(patch),
                    ),
                ),
            };
            self.limiter.acquire().await;
            self.check_leading()?;
            if let Err(e) = self.send::<serde_json::Value>(request).await {
                warn!(pod = %key, %object, error = %e, "volume write refused");
                return Err(BindResult::Failed(format!("{object}: {e}")));
            }
        }
        Ok(())
    }

    /// Waits, as kube-scheduler's PreBind does, until every claim written to
    /// is bound (the PV controller or a provisioner does that), for at most
    /// `VOLUME_BIND_TIMEOUT`.
    async fn wait_for_volumes(&self, key: &PodKey, writes: &[VolumeWrite]) -> Result<(), BindResult> {
        let deadline = Instant::now() + VOLUME_BIND_TIMEOUT;
        for write in writes {
            let claim = write.claim();
            let claims = Request::new(PersistentVolumeClaim::url_path(&(), Some(&claim.namespace)));
            loop {
                self.limiter.acquire().await;
                self.check_leading()?;
                let read = claims.get(&claim.name, &GetParams::default());
                let progress = match self.send::<PersistentVolumeClaim>(read).await {
                    Ok(current) => claim_progress(&current, write),
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        ClaimProgress::GivenUp(format!("PersistentVolumeClaim {claim} is gone"))
                    }
                    Err(e) => {
                        debug!(pod = %key, %claim, error = %e, "reading a claim failed; reading again");
                        ClaimProgress::Waiting
                    }
                };
                match progress {
                    ClaimProgress::Bound => break,
                    ClaimProgress::GivenUp(why) => return Err(BindResult::Failed(why)),
                    ClaimProgress::Waiting if Instant::now() >= deadline => {
                        return Err(BindResult::Failed(format!(
                            "PersistentVolumeClaim {claim} not bound within {VOLUME_BIND_TIMEOUT:?}"
                        )));
                    }
                    ClaimProgress::Waiting => tokio::time::sleep(VOLUME_POLL).await,
                }
            }
        }
        Ok(())
    }

    /// Adds the pod to the `reservedFor` of a claim allocated already (or by
    /// another member of the same pass, whose write may land later), from
    /// the claim as read again.
    async fn reserve_again(&self, uid: &str, key: &PodKey, write: &ClaimWrite) -> Result<(), String> {
        let claims = Request::new(ResourceClaim::url_path(&(), Some(&write.key.namespace)));
        let mut last = String::from("not allocated yet");
        for _ in 0..SHARED_CLAIM_READS {
            self.limiter.acquire().await;
            let request = claims.get(&write.key.name, &GetParams::default()).map_err(|e| e.to_string())?;
            let read: ResourceClaim = self.client.request(request).await.map_err(|e| e.to_string())?;
            let now = device_claim(&read).map_err(|e| e.to_string())?;
            let again = match write.rebase(&now, uid) {
                Rebased::Reserved => return Ok(()),
                Rebased::AllocatedOtherwise => return Err("allocated to other devices meanwhile".into()),
                Rebased::NotAllocatedYet => {
                    tokio::time::sleep(SHARED_CLAIM_PAUSE).await;
                    continue;
                }
                Rebased::Retry(again) => *again,
            };
            let Some(patch) = claim_status_patch(&again, again.resource_version.as_deref(), (&key.name, uid)) else {
                return Ok(());
            };
            match self.patch_status(write, patch).await.map_err(|_| NOT_LEADING.to_string())? {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Sends one JSON patch of a claim's status (paced, only while leading):
    /// the outer error is "not sent", the inner one the refusal.
    async fn patch_status(
        &self,
        write: &ClaimWrite,
        patch: serde_json::Value,
    ) -> Result<Result<(), String>, BindResult> {
        let patch: json_patch::Patch = match serde_json::from_value(patch) {
            Ok(patch) => patch,
            Err(e) => return Ok(Err(e.to_string())),
        };
        self.limiter.acquire().await;
        self.check_leading()?;
        let claims = Request::new(ResourceClaim::url_path(&(), Some(&write.key.namespace)));
        let params = PatchParams::default();
        let request = claims.patch_subresource("status", &write.key.name, &params, &Patch::<()>::Json(patch));
        Ok(self.send::<ResourceClaim>(request).await.map(|_| ()).map_err(|e| e.to_string()))
    }

    /// Checked right before each call: nothing is sent once the lease is lost.
    fn check_leading(&self) -> Result<(), BindResult> {
        if self.leadership.is_leading() { Ok(()) } else { Err(BindResult::NotSent(NOT_LEADING.into())) }
    }

    /// The API server copies a Binding's annotations onto the pod as it sets
    /// the node, so the GPUs are recorded with the bind in one call (half the
    /// requests of a patch then a bind), the UID guards both, and a bind that
    /// fails (another client bound the pod first) leaves no GPUs recorded.
    async fn post_binding(&self, uid: &str, key: &PodKey, node: &str, gpus: &[u32]) -> BindResult {
        self.limiter.acquire().await;
        if self.node_gone(node) {
            return BindResult::NodeGone;
        }
        if let Err(not_sent) = self.check_leading() {
            return not_sent;
        }
        let annotations =
            (!gpus.is_empty()).then(|| [(GPUS_ANNOTATION.to_string(), gpu_annotation_value(gpus))].into());
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(key.name.clone()),
                namespace: Some(key.namespace.clone()),
                uid: Some(uid.to_string()),
                annotations,
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..Default::default()
            },
        };
        let body = match serde_json::to_vec(&binding) {
            Ok(body) => body,
            Err(e) => return BindResult::Failed(e.to_string()),
        };
        let pods = Request::new(Pod::url_path(&(), Some(&key.namespace)));
        let request = pods.create_subresource("binding", &key.name, &PostParams::default(), body);
        match self.send::<Status>(request).await {
            Ok(_) => BindResult::Bound,
            Err(e) => classify(e, key),
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<T, kube::Error> {
        send_before_handover(&self.client, &self.leadership, request).await
    }
}

/// Sends a write the API server must carry out before another replica may
/// lead (`Leadership::write_timeout`), or not at all: binds, claim writes
/// and evictions, which decide where pods run.
pub(super) async fn send_before_handover<T: serde::de::DeserializeOwned>(
    client: &Client,
    leadership: &Leadership,
    request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
) -> Result<T, kube::Error> {
    let request = with_server_timeout(request.map_err(kube::Error::BuildRequest)?, leadership.write_timeout());
    // Which term sent which write, for tracing a write that landed late.
    debug!(uri = %request.uri(), term = ?leadership.term(), "write sent");
    client.request(request).await
}

/// `request` with the API server told to give up after `timeout` (its
/// `timeout` parameter, which bounds the call's work in etcd too).
fn with_server_timeout<B>(mut request: http::Request<B>, timeout: Option<Duration>) -> http::Request<B> {
    if let Some(timeout) = timeout {
        let uri = request.uri().to_string();
        let separator = match uri.chars().last() {
            Some('?' | '&') => "",
            _ if uri.contains('?') => "&",
            _ => "?",
        };
        if let Ok(uri) = format!("{uri}{separator}timeout={}ms", timeout.as_millis().max(1)).parse() {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// Why a write was not sent after the lease was lost.
pub(super) const NOT_LEADING: &str = "this replica no longer leads";

/// Runs `attempt`, and again after each of `RETRY_DELAYS` while its result
/// is `transient`.
pub(super) async fn retrying<T, F>(mut attempt: impl FnMut() -> F, transient: impl Fn(&T) -> bool) -> T
where
    F: Future<Output = T>,
{
    let mut result = attempt().await;
    for delay in RETRY_DELAYS {
        if !transient(&result) {
            break;
        }
        tokio::time::sleep(delay).await;
        result = attempt().await;
    }
    result
}

fn classify(error: kube::Error, key: &PodKey) -> BindResult {
    match error {
        kube::Error::Api(e) if e.code == 404 => BindResult::PodGone,
        kube::Error::Api(e) if e.code == 409 => BindResult::Conflict(e.message.clone()),
        e => {
            warn!(pod = %key, error = %e, "bind failed");
            BindResult::Failed(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::leader_election::Term;

    fn uri_of(request: &http::Request<Vec<u8>>) -> String {
        request.uri().to_string()
    }

    #[test]
    fn a_write_tells_the_api_server_when_to_give_up_only_under_election() {
        let binding = || {
            let pods = Request::new(Pod::url_path(&(), Some("ns")));
            pods.create_subresource("binding", "p", &PostParams::default(), vec![]).unwrap()
        };
        let timed = with_server_timeout(binding(), Some(Duration::from_millis(2500)));
        assert_eq!(uri_of(&timed), "/api/v1/namespaces/ns/pods/p/binding?timeout=2500ms");
        assert_eq!(uri_of(&with_server_timeout(binding(), None)), uri_of(&binding()));
        let claims = Request::new(ResourceClaim::url_path(&(), Some("ns")));
        let params = PatchParams { field_manager: Some("phalanx".into()), ..Default::default() };
        let patch = claims.patch("c", &params, &Patch::Merge(serde_json::json!({}))).unwrap();
        let timed = uri_of(&with_server_timeout(patch, Some(Duration::from_secs(5))));
        assert!(timed.ends_with("fieldManager=phalanx&timeout=5000ms"), "{timed}");
    }

    #[test]
    fn a_leader_s_writes_may_take_until_another_replica_may_lead_and_without_election_any_time() {
        assert_eq!(Leadership::always().write_timeout(), None);
        let (publish, leadership) = Leadership::standby();
        let now = Instant::now();
        let term =
            Term { number: 1, until: Some(now + Duration::from_secs(4)), handover: Some(now + Duration::from_secs(6)) };
        publish.send_replace(Some(term));
        let timeout = leadership.write_timeout().unwrap();
        assert!(timeout <= Duration::from_secs(6) && timeout > Duration::from_secs(5), "{timeout:?}");
    }
}
