//! Leader election through a `coordination.k8s.io/v1` Lease, for running two
//! replicas. The elector reads the Lease every retry period and creates,
//! takes or renews it as the core's [`Candidate`] decides; every write
//! carries the resourceVersion it read, so of two replicas writing at once
//! one gets a 409 and neither believes it won by mistake.
//!
//! What it publishes is a [`Leadership`]: whether this replica leads, until
//! when, and in which term. Everything that writes decisions (binder,
//! evictor, reporter, PodGroup status) checks it right before each call,
//! by the clock, so a replica that was frozen past its deadline stops at
//! once when it wakes, before the elector has even run again. A new term
//! starts with a fresh list of pods (the pod watch restarts, see
//! `informers`) so the new leader never decides on a stale view.
//!
//! A Lease that cannot be written at all (its namespace missing, or RBAC
//! refusing) would otherwise leave every replica a silent standby for ever,
//! so the elector also publishes a [`LeaseBlocked`]: logged as an error when
//! it starts and shown by `/readyz` while it lasts.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use thiserror::Error;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::leader_lease::{Candidate, LeaseRecord, LeaseStep, LeaseTimes};
use super::metrics::Metrics;
use crate::config::LeaderElection;

/// A term of leadership: numbered from 1 per process (0: no election, this
/// replica always leads), valid until `until` unless renewed; no other
/// replica may lead before `handover`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    pub number: u64,
    pub until: Option<std::time::Instant>,
    pub handover: Option<std::time::Instant>,
}

/// Whether this replica leads: a cheap handle to check before every write.
#[derive(Debug, Clone)]
pub struct Leadership(watch::Receiver<Option<Term>>);

impl Leadership {
    /// Without leader election: leads for ever, in term 0.
    pub fn always() -> Self {
        Self(watch::channel(Some(Term { number: 0, until: None, handover: None })).1)
    }

    /// A standby, and the sender that starts and ends its terms.
    pub fn standby() -> (watch::Sender<Option<Term>>, Self) {
        let (publish, leadership) = watch::channel(None);
        (publish, Self(leadership))
    }

    /// The term we lead in, if we lead now.
    pub fn term(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        self.0.borrow().filter(|t| t.until.is_none_or(|until| now < until)).map(|t| t.number)
    }

    pub fn is_leading(&self) -> bool {
        self.term().is_some()
    }

    /// How long the API server may take to carry out a write sent now: until
    /// another replica may lead, so that a write held up in the API server
    /// (etcd away) cannot land after the next leader has looked (found by
    /// the chaos soak: binds sent just before an etcd restart landed after
    /// the next leader had given their GPUs to other pods). `None`: no
    /// election, the API server's own limit holds.
    pub fn write_timeout(&self) -> Option<Duration> {
        let now = std::time::Instant::now();
        self.0.borrow().and_then(|t| t.handover).map(|handover| handover.saturating_duration_since(now))
    }

    /// Resolves when a term starts or ends (never, without election).
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves when a term other than `current` starts.
    pub async fn next_term(&mut self, current: Option<u64>) {
        loop {
            self.changed().await;
            if self.term().is_some_and(|t| Some(t) != current) {
                return;
            }
        }
    }
}

/// Why no replica can lead with this configuration: the Lease cannot be
/// written. Each message names the setting and the ways out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LeaseBlocked {
    #[error(
        "leader election cannot write the Lease {namespace}/{name}: namespace {namespace:?} \
         (leaderElection.resourceNamespace) does not exist, so no replica can lead and nothing is scheduled. \
         Either create it (`kubectl create namespace {namespace}`, or install with `kubectl apply -k deploy/`), \
         or set leaderElection.resourceNamespace to an existing namespace (or leaderElection.leaderElect: \
         false to run a single replica without election)"
    )]
    NamespaceMissing { namespace: String, name: String },
    #[error(
        "leader election may not {verb} the Lease {namespace}/{name} (leaderElection.resourceNamespace, \
         leaderElection.resourceName): {message}; so no replica can lead and nothing is scheduled. Either grant \
         this identity get, create and update on leases in {namespace:?} (deploy/rbac/scheduler.yaml), or set \
         leaderElection.resourceNamespace to a namespace where it may"
    )]
    Forbidden { namespace: String, name: String, verb: &'static str, message: String },
}

/// What the elector last learned about writing the Lease: `None` while it works.
pub type LeaseHealth = watch::Receiver<Option<LeaseBlocked>>;

/// Stops the elector and gives the lease up.
pub struct Election {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Election {
    /// Stops renewing and, if this replica holds the lease, releases it so
    /// the standby takes over at its next look instead of after the lease
    /// duration. Call once binds in flight are done.
    pub async fn release(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Starts the elector for `identity`.
pub fn start(
    client: Client,
    settings: &LeaderElection,
    identity: String,
    metrics: Metrics,
) -> (Leadership, LeaseHealth, Election) {
    let times = LeaseTimes {
        lease_duration: settings.lease_duration,
        renew_deadline: settings.renew_deadline,
        retry_period: settings.retry_period,
    };
    let (publish, leadership) = Leadership::standby();
    let (blocked, health) = watch::channel(None);
    metrics.leader.set(0);
    let elector = Elector {
        api: Api::namespaced(client, &settings.resource_namespace),
        namespace: settings.resource_namespace.clone(),
        name: settings.resource_name.clone(),
        candidate: Candidate::new(identity, times),
        times,
        publish,
        blocked,
        metrics,
        term: 0,
        leader_seen: None,
    };
    info!(
        lease = %format!("{}/{}", settings.resource_namespace, settings.resource_name),
        identity = elector.candidate.identity(),
        "leader election: standing by until this replica holds the lease"
    );
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(elector.run(stopped));
    (leadership, health, Election { stop, task })
}

struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    candidate: Candidate,
    times: LeaseTimes,
    publish: watch::Sender<Option<Term>>,
    blocked: watch::Sender<Option<LeaseBlocked>>,
    metrics: Metrics,
    /// Terms started so far.
    term: u64,
    /// The other replica last seen leading, to log each change once.
    leader_seen: Option<String>,
}

impl Elector {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        loop {
            let round = self.round().await;
            self.publish(round);
            // Wake at the deadline too, so a lapsed term is announced on time.
            let now = std::time::Instant::now();
            let deadline = self.candidate.leading_until().filter(|until| *until > now);
            let wait = deadline.map_or(self.times.retry_period, |until| self.times.retry_period.min(until - now));
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.release().await;
    }

    /// One look at the lease, and the write the candidate decides on.
    async fn round(&mut self) -> Round {
        let lease = match self.call(self.api.get_opt(&self.name)).await {
            Ok(lease) => lease,
            Err(e) => {
                match refusal(&e, LeaseVerb::Get, &self.namespace, &self.name) {
                    Some(why) => self.set_blocked(Some(why)),
                    None => warn!(error = %e, "reading the leader lease failed"),
                }
                return Round::NoNewTerm;
            }
        };
        let record = lease.as_ref().map(record);
        match self.candidate.next_step(record.as_ref(), std::time::Instant::now()) {
            LeaseStep::Create => self.write(None, LeaseWrite::NewTerm).await,
            LeaseStep::Acquire => self.write(lease, LeaseWrite::NewTerm).await,
            LeaseStep::Renew => {
                // A renewal written late starts a new term all the same (see publish).
                self.write(lease, LeaseWrite::Renewal).await;
                Round::NoNewTerm
            }
            LeaseStep::StandBy { holder } => {
                // Another replica leads, so the Lease works for the cluster.
                self.set_blocked(None);
                if self.leader_seen.as_ref() != Some(&holder) {
                    info!(leader = %holder, "another replica leads; standing by");
                    self.leader_seen = Some(holder);
                }
                Round::NoNewTerm
            }
        }
    }

    /// Creates (`lease: None`), takes or renews the lease. The lease read
    /// carries its resourceVersion, so the write fails with a 409 if anyone
    /// wrote in between. A new term that was written is [`Round::TookLease`].
    async fn write(&mut self, lease: Option<Lease>, kind: LeaseWrite) -> Round {
        let now = MicroTime(Timestamp::now());
        let identity = self.candidate.identity().to_string();
        let seconds = i32::try_from(self.times.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let sent_at = std::time::Instant::now();
        let verb = if lease.is_some() { LeaseVerb::Update } else { LeaseVerb::Create };
        let written = match lease {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(identity),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.call(self.api.create(&PostParams::default(), &lease)).await
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                if kind == LeaseWrite::NewTerm {
                    spec.acquire_time = Some(now.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.holder_identity = Some(identity);
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(now);
                self.call(self.api.replace(&self.name, &PostParams::default(), &lease)).await
            }
        };
        match written {
            Ok(lease) => {
                let version = lease.metadata.resource_version.unwrap_or_default();
                self.candidate.written(sent_at, version);
                self.leader_seen = None;
                self.set_blocked(None);
                return match kind {
                    LeaseWrite::NewTerm => Round::TookLease,
                    LeaseWrite::Renewal => Round::NoNewTerm,
                };
            }
            Err(kube::Error::Api(e)) if e.code == 409 => debug!("the leader lease changed meanwhile; reading it again"),
            Err(e) => match refusal(&e, verb, &self.namespace, &self.name) {
                Some(why) => self.set_blocked(Some(why)),
                None => warn!(error = %e, ?kind, "writing the leader lease failed"),
            },
        }
        Round::NoNewTerm
    }

    /// Logs each change once: an error when writing becomes impossible, a
    /// note when it works again.
    fn set_blocked(&self, blocked: Option<LeaseBlocked>) {
        self.blocked.send_if_modified(|current| {
            if *current == blocked {
                return false;
            }
            match &blocked {
                Some(why) => error!("{why}"),
                None => info!("the leader lease can be written again"),
            }
            *current = blocked;
            true
        });
    }

    /// Announces a term that starts or ends; a renewal in time only moves
    /// the deadline on, silently. A lease taken (`Round::TookLease`), or renewed after
    /// its deadline passed, starts a new term even if the last one was never
    /// seen to end (this process was frozen while another replica led): the
    /// new term lists pods afresh.
    fn publish(&mut self, round: Round) {
        let took = round == Round::TookLease;
        let now = std::time::Instant::now();
        let leading = self.candidate.is_leading(now);
        let (until, handover) = (self.candidate.leading_until(), self.candidate.handover_at());
        let current = *self.publish.borrow();
        let lapsed = current.is_some_and(|t| t.until.is_some_and(|u| u <= now));
        match (current, leading) {
            (Some(term), true) if !took && !lapsed => {
                self.publish.send_if_modified(|t| {
                    *t = Some(Term { until, handover, ..term });
                    false
                });
            }
            (_, true) => {
                if current.is_some() {
                    warn!(term = self.term, "the last term lapsed unseen; a new one starts");
                }
                self.term += 1;
                info!(identity = self.candidate.identity(), term = self.term, "this replica leads");
                self.metrics.leader.set(1);
                self.publish.send_replace(Some(Term { number: self.term, until, handover }));
            }
            (Some(term), false) => {
                warn!(
                    identity = self.candidate.identity(),
                    term = term.number,
                    "this replica lost the lease; stops deciding"
                );
                self.metrics.leader.set(0);
                self.publish.send_replace(None);
            }
            (None, false) => {}
        }
    }

    /// Gives the lease up if we hold it: no holder, and a duration of one
    /// second, as client-go's leader election releases.
    async fn release(&mut self) {
        self.candidate.step_down();
        if self.publish.send_replace(None).is_some() {
            self.metrics.leader.set(0);
            info!(identity = self.candidate.identity(), "stepping down for shutdown");
        }
        let mut lease = match self.call(self.api.get_opt(&self.name)).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "reading the leader lease to release it failed");
                return;
            }
        };
        let Some(spec) =
            lease.spec.as_mut().filter(|s| s.holder_identity.as_deref() == Some(self.candidate.identity()))
        else {
            return;
        };
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.call(self.api.replace(&self.name, &PostParams::default(), &lease)).await {
            Ok(_) => info!(identity = self.candidate.identity(), "leader lease released"),
            Err(e) => warn!(error = %e, "releasing the leader lease failed; the standby takes over when it expires"),
        }
    }

    /// A call to the API server, given up after the renew deadline: a
    /// leader that waits longer has stopped leading anyway.
    async fn call<T>(&self, call: impl Future<Output = Result<T, kube::Error>>) -> Result<T, kube::Error> {
        match tokio::time::timeout(self.times.renew_deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(kube::Error::Service(format!("no answer within {:?}", self.times.renew_deadline).into())),
        }
    }
}

/// A refusal that no retry gets past (namespace missing, forbidden), if `e` is one.
fn refusal(e: &kube::Error, verb: LeaseVerb, namespace: &str, name: &str) -> Option<LeaseBlocked> {
    let kube::Error::Api(response) = e else { return None };
    let (namespace, name) = (namespace.to_string(), name.to_string());
    match (response.code, verb) {
        // Creating in a namespace that exists cannot answer 404.
        (404, LeaseVerb::Create) => Some(LeaseBlocked::NamespaceMissing { namespace, name }),
        (403, _) => {
            Some(LeaseBlocked::Forbidden { namespace, name, verb: verb.as_str(), message: response.message.clone() })
        }
        _ => None,
    }
}

/// What one round of the elector did: a term starts only when it took the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    TookLease,
    NoNewTerm,
}

/// A write of the lease: taking it (a new term) or renewing it within one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseWrite {
    NewTerm,
    Renewal,
}

#[derive(Debug, Clone, Copy)]
enum LeaseVerb {
    Get,
    Create,
    Update,
}

impl LeaseVerb {
    fn as_str(self) -> &'static str {
        match self {
            LeaseVerb::Get => "get",
            LeaseVerb::Create => "create",
            LeaseVerb::Update => "update",
        }
    }
}

fn record(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.as_ref();
    LeaseRecord {
        holder: spec.and_then(|s| s.holder_identity.clone()),
        lease_duration: spec
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs),
        version: lease.metadata.resource_version.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(kube::core::Status::failure(message, "").with_code(code).boxed())
    }

    #[test]
    fn a_missing_namespace_and_a_forbidden_lease_name_the_setting_and_the_ways_out() {
        let missing = refusal(&api_error(404, "namespaces \"ops\" not found"), LeaseVerb::Create, "ops", "phalanx")
            .expect("a create answered 404 means the namespace is missing")
            .to_string();
        for needed in ["leaderElection.resourceNamespace", "kubectl create namespace ops", "leaderElect: false"] {
            assert!(missing.contains(needed), "{needed:?} missing from: {missing}");
        }
        let forbidden = refusal(&api_error(403, "leases is forbidden"), LeaseVerb::Update, "ops", "phalanx")
            .expect("403 is a refusal")
            .to_string();
        for needed in ["may not update the Lease ops/phalanx", "leases is forbidden", "deploy/rbac/scheduler.yaml"] {
            assert!(forbidden.contains(needed), "{needed:?} missing from: {forbidden}");
        }
    }

    #[test]
    fn passing_failures_are_retried_not_reported() {
        // The Lease deleted between read and write, or a server error: the next round may work.
        assert_eq!(refusal(&api_error(404, "leases \"phalanx\" not found"), LeaseVerb::Update, "ops", "phalanx"), None);
        assert_eq!(refusal(&api_error(500, "etcd timeout"), LeaseVerb::Create, "ops", "phalanx"), None);
    }
}
