//! Writes the PodGroup statuses the scheduler asks for
//! (`Action::WriteGroupStatus`), through the status subresource with a merge
//! patch guarded by the resourceVersion the status was computed from, so a
//! stale view is refused (409) rather than written. Writes run concurrently,
//! on the Events' rate budget (a status never slows down a bind); each
//! outcome goes back to the scheduling loop.

use std::sync::Arc;

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use phalanx_core::gang_status::{StatusOutcome, StatusResult, StatusWrite};
use phalanx_kube::api::pod_group::PodGroup;
use phalanx_kube::pod_group_status::{group_record, status_patch};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use super::leader_election::Leadership;
use super::rate_limit::RateLimiter;

const CONCURRENT_WRITES: usize = 8;

#[derive(Clone)]
pub struct StatusWriter {
    client: Client,
    limiter: Arc<RateLimiter>,
    leadership: Leadership,
    slots: Arc<Semaphore>,
    outcomes: mpsc::UnboundedSender<StatusOutcome>,
}

impl StatusWriter {
    /// Writes only while `leadership` holds, checked right before each call.
    pub fn new(
        client: Client,
        limiter: Arc<RateLimiter>,
        leadership: Leadership,
        outcomes: mpsc::UnboundedSender<StatusOutcome>,
    ) -> Self {
        Self { client, limiter, leadership, slots: Arc::new(Semaphore::new(CONCURRENT_WRITES)), outcomes }
    }

    /// Starts the write; its outcome is sent back when it ends.
    pub fn write(&self, write: StatusWrite) {
        debug!(group = %write.group, status = ?write.status, "writing PodGroup status");
        let writer = self.clone();
        tokio::spawn(async move {
            let Ok(_slot) = writer.slots.clone().acquire_owned().await else { return };
            let result = writer.send(&write).await;
            match &result {
                StatusResult::Failed(error) => {
                    warn!(group = %write.group, %error, "PodGroup status not written; will try again")
                }
                StatusResult::Conflict | StatusResult::NotSent(_) => {
                    debug!(group = %write.group, ?result, "will look again")
                }
                StatusResult::Written(_) | StatusResult::Gone => {}
            }
            let _ = writer.outcomes.send(StatusOutcome { group: write.group, result });
        });
    }

    async fn send(&self, write: &StatusWrite) -> StatusResult {
        self.limiter.acquire().await;
        if !self.leadership.is_leading() {
            return StatusResult::NotSent("this replica no longer leads".into());
        }
        let patch = status_patch(&write.status, write.resource_version.as_deref());
        let api: Api<PodGroup> = Api::namespaced(self.client.clone(), &write.namespace);
        match api.patch_status(&write.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(written) => group_record(&written).map_or(StatusResult::Gone, StatusResult::Written),
            Err(kube::Error::Api(status)) if status.code == 409 => StatusResult::Conflict,
            Err(kube::Error::Api(status)) if status.code == 404 => StatusResult::Gone,
            Err(error) => StatusResult::Failed(error.to_string()),
        }
    }
}
