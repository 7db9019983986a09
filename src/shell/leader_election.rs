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

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::leader_lease::{Candidate, LeaseRecord, LeaseStep, LeaseTimes};
use super::metrics::Metrics;
use crate::config::LeaderElection;

/// A term of leadership: numbered from 1 per process (0: no election, this
/// replica always leads), valid until `until` unless renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    pub number: u64,
    pub until: Option<std::time::Instant>,
}

/// Whether this replica leads: a cheap handle to check before every write.
#[derive(Debug, Clone)]
pub struct Leadership(watch::Receiver<Option<Term>>);

impl Leadership {
    /// Without leader election: leads for ever, in term 0.
    pub fn always() -> Self {
        Self(watch::channel(Some(Term { number: 0, until: None })).1)
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
pub fn start(client: Client, settings: &LeaderElection, identity: String, metrics: Metrics) -> (Leadership, Election) {
    let times = LeaseTimes {
        lease_duration: settings.lease_duration,
        renew_deadline: settings.renew_deadline,
        retry_period: settings.retry_period,
    };
    let (publish, leadership) = Leadership::standby();
    metrics.leader.set(0);
    let elector = Elector {
        api: Api::namespaced(client, &settings.resource_namespace),
        name: settings.resource_name.clone(),
        candidate: Candidate::new(identity, times),
        times,
        publish,
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
    (leadership, Election { stop, task })
}

struct Elector {
    api: Api<Lease>,
    name: String,
    candidate: Candidate,
    times: LeaseTimes,
    publish: watch::Sender<Option<Term>>,
    metrics: Metrics,
    /// Terms started so far.
    term: u64,
    /// The other replica last seen leading, to log each change once.
    leader_seen: Option<String>,
}

impl Elector {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        loop {
            let took = self.round().await;
            self.publish(took);
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
    /// Returns whether it took (or created) the lease.
    async fn round(&mut self) -> bool {
        let lease = match self.call(self.api.get_opt(&self.name)).await {
            Ok(lease) => lease,
            Err(e) => {
                warn!(error = %e, "reading the leader lease failed");
                return false;
            }
        };
        let record = lease.as_ref().map(record);
        match self.candidate.next_step(record.as_ref(), std::time::Instant::now()) {
            LeaseStep::Create => self.write(None, true).await,
            LeaseStep::Acquire => self.write(lease, true).await,
            LeaseStep::Renew => {
                self.write(lease, false).await;
                false
            }
            LeaseStep::StandBy { holder } => {
                if self.leader_seen.as_ref() != Some(&holder) {
                    info!(leader = %holder, "another replica leads; standing by");
                    self.leader_seen = Some(holder);
                }
                false
            }
        }
    }

    /// Creates (`lease: None`), takes (`new_term`) or renews the lease. The
    /// lease read carries its resourceVersion, so the write fails with a
    /// 409 if anyone wrote in between. Returns whether it succeeded.
    async fn write(&mut self, lease: Option<Lease>, new_term: bool) -> bool {
        let now = MicroTime(Timestamp::now());
        let identity = self.candidate.identity().to_string();
        let seconds = i32::try_from(self.times.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let sent_at = std::time::Instant::now();
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
                if new_term {
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
                return true;
            }
            Err(kube::Error::Api(e)) if e.code == 409 => debug!("the leader lease changed meanwhile; reading it again"),
            Err(e) => warn!(error = %e, new_term, "writing the leader lease failed"),
        }
        false
    }

    /// Announces a term that starts or ends; a renewal in time only moves
    /// the deadline on, silently. A lease taken (`took`), or renewed after
    /// its deadline passed, starts a new term even if the last one was never
    /// seen to end (this process was frozen while another replica led): the
    /// new term lists pods afresh.
    fn publish(&mut self, took: bool) {
        let now = std::time::Instant::now();
        let leading = self.candidate.is_leading(now);
        let until = self.candidate.leading_until();
        let current = *self.publish.borrow();
        let lapsed = current.is_some_and(|t| t.until.is_some_and(|u| u <= now));
        match (current, leading) {
            (Some(term), true) if !took && !lapsed => {
                self.publish.send_if_modified(|t| {
                    *t = Some(Term { until, ..term });
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
                self.publish.send_replace(Some(Term { number: self.term, until }));
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
