//! What users read about waiting gangs and pods, each message once until it
//! changes or `REPORT_REPEAT` passes.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use tracing::warn;

use super::{Action, ConditionStatus, GroupCondition, GroupConditionKind, ObjectRef, Report, Scheduler, ShownReason};
use crate::gang::{GangId, GangKind, GangObject, InitialScheduling};
use crate::queue::GangKey;
use crate::resources::GPU;
use crate::topology::model::{GPU_TOPOLOGY_API_VERSION, GPU_TOPOLOGY_KIND};

/// An unchanged unschedulable message is reported again only after this long.
const REPORT_REPEAT: Duration = Duration::from_secs(30);

/// The last message reported about each pod and each gang's object.
#[derive(Debug, Default)]
pub(super) struct ReportLog {
    /// By pod UID.
    pods: HashMap<String, (String, Instant)>,
    /// By gang, then by Event reason.
    gangs: HashMap<GangKey, HashMap<&'static str, (String, Instant)>>,
}

impl ReportLog {
    pub(super) fn forget_pod(&mut self, uid: &str) {
        self.pods.remove(uid);
    }

    pub(super) fn forget_gang(&mut self, key: &GangKey) {
        self.gangs.remove(key);
    }

    pub(super) fn retain_gangs(&mut self, keep: impl Fn(&GangKey) -> bool) {
        self.gangs.retain(|key, _| keep(key));
    }
}

/// Whether `message` was just reported about `about` (and records it if not).
fn repeated<K: Hash + Eq>(log: &mut HashMap<K, (String, Instant)>, about: K, message: &str, now: Instant) -> bool {
    if let Some((last, at)) = log.get(&about)
        && last == message
        && now.duration_since(*at) < REPORT_REPEAT
    {
        return true;
    }
    log.insert(about, (message.to_string(), now));
    false
}

impl Scheduler {
    pub(super) fn report(&mut self, report: Report) {
        self.outbox.push(Action::Report(report));
    }

    /// A FailedScheduling Event on every pending member, and its condition
    /// where it does not already say `message` (after a change of leader,
    /// thousands of pending pods may show it already); an upstream
    /// PodGroup's `PodGroupInitiallyScheduled` says it too.
    pub(super) fn report_members(&mut self, key: &GangKey, message: &str, now: Instant) {
        self.report_initially_scheduled(key, ConditionStatus::False, message, now);
        let members: Vec<_> = self
            .queue
            .members(key)
            .map(|p| (p.key.clone(), p.uid.clone(), p.resource_version.clone(), p.shown_reason.clone()))
            .collect();
        for (pod, uid, resource_version, shown) in members {
            if repeated(&mut self.reports.pods, uid.clone(), message, now) {
                continue;
            }
            let regarding = ObjectRef::pod(&pod, &uid);
            let shown = match shown {
                Some(shown) if shown == message => None,
                Some(_) => Some(ShownReason::Outdated),
                None => Some(ShownReason::Nothing),
            };
            if let Some(shown) = shown {
                let message = message.to_string();
                self.report(Report::Unschedulable { key: pod, uid, resource_version, message, shown });
            }
            let message = message.to_string();
            self.report(Report::Event { regarding, warning: true, reason: "FailedScheduling", message });
        }
    }

    /// A Warning Event on the gang's object (its PodGroup or job).
    pub(super) fn report_gang(&mut self, key: &GangKey, reason: &'static str, message: String, now: Instant) {
        let object = key.gang().and_then(|id| self.gangs.object(id)).cloned();
        self.report_gang_object(key, object.as_ref(), reason, message, now);
    }

    pub(super) fn report_gang_object(
        &mut self,
        key: &GangKey,
        object: Option<&GangObject>,
        reason: &'static str,
        message: String,
        now: Instant,
    ) {
        let Some(id) = key.gang() else { return };
        // Deduplicated per reason, so a warning and a waiting message about
        // the same gang do not keep replacing each other.
        if repeated(self.reports.gangs.entry(key.clone()).or_default(), reason, &message, now) {
            return;
        }
        let regarding = gang_reference(id, object);
        self.report(Report::Event { regarding, warning: true, reason, message });
    }

    /// An upstream PodGroup's condition, each message once until it changes
    /// or `REPORT_REPEAT` passes. `PodGroupInitiallyScheduled` is final once
    /// True: a gang whose object says so is not marked unschedulable again.
    pub(super) fn report_group_condition(&mut self, id: &GangId, condition: GroupCondition, now: Instant) {
        if id.kind != GangKind::UpstreamPodGroup {
            return;
        }
        let done = matches!(
            self.gangs.object(id),
            Some(GangObject::Valid(spec)) if spec.initial_scheduling == InitialScheduling::Done
        );
        if done && condition.kind == GroupConditionKind::InitiallyScheduled {
            return;
        }
        let log = self.reports.gangs.entry(GangKey::Gang(id.object())).or_default();
        let said = format!("{}{}", condition.status.name(), condition.message);
        if repeated(log, condition.kind.name(), &said, now) {
            return;
        }
        self.report(Report::GroupCondition { gang: id.object(), condition });
    }

    /// `PodGroupInitiallyScheduled` of the gang `key`, if it is an upstream PodGroup.
    pub(super) fn report_initially_scheduled(
        &mut self,
        key: &GangKey,
        status: ConditionStatus,
        message: &str,
        now: Instant,
    ) {
        let Some(id) = key.gang() else { return };
        let reason = match status {
            ConditionStatus::True => "Scheduled",
            ConditionStatus::False => "Unschedulable",
        };
        let kind = GroupConditionKind::InitiallyScheduled;
        self.report_group_condition(id, GroupCondition { kind, status, reason, message: message.to_string() }, now);
    }

    pub(super) fn report_unused_topology(&mut self, node: &str, reported: usize, offered: usize) {
        let message = format!(
            "gputopology {node}: spec.gpus: lists {reported} GPUs but node {node} offers {offered} {GPU}; \
             the built-in template is used instead"
        );
        warn!(%message, "topology report not used");
        let regarding = ObjectRef {
            api_version: Some(GPU_TOPOLOGY_API_VERSION.into()),
            kind: Some(GPU_TOPOLOGY_KIND.into()),
            name: Some(node.to_string()),
            ..Default::default()
        };
        self.report(Report::Event { regarding, warning: true, reason: "InvalidObject", message });
    }
}

fn gang_reference(id: &GangId, object: Option<&GangObject>) -> ObjectRef {
    ObjectRef {
        api_version: Some(id.kind.api_version().into()),
        kind: Some(id.kind.object_kind().into()),
        namespace: Some(id.namespace.clone()),
        name: Some(id.name.clone()),
        uid: object.and_then(GangObject::uid).map(str::to_string),
    }
}
