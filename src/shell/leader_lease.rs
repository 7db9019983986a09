//! Leader election through a Lease, as decisions only: given the Lease as
//! just read, the time, and who we are, whether to create, take, renew or
//! leave it, and whether we still lead. The shell reads and writes the Lease
//! (with resourceVersion preconditions) and carries these decisions out.
//!
//! Two replicas never both believe they lead:
//! - a leader leads until `renew_deadline` after it *sent* its last
//!   successful write; the write landed after that, so
//! - a standby, which takes a lease only once it has seen the same version
//!   for a whole `lease_duration` (longer than `renew_deadline`) by its own
//!   clock, takes it after the leader has stopped.
//!
//! Expiry is judged by how long the lease has gone unchanged on our own
//! monotonic clock, never by the `renewTime` the holder wrote, so clocks
//! that disagree between machines do not matter.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimes {
    /// How long a lease that stops changing stays its holder's.
    pub lease_duration: Duration,
    /// How long a leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the lease is read (and renewed, by its holder).
    pub retry_period: Duration,
}

/// What the decision needs of a `coordination.k8s.io/v1` Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// `spec.holderIdentity`; empty or absent when released.
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds`, as its holder set it.
    pub lease_duration: Option<Duration>,
    /// `metadata.resourceVersion`: changes on every write, renewals included.
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStep {
    /// There is no lease: create it, held by us.
    Create,
    /// The lease is free (released, or expired): take it, a new term.
    Acquire,
    /// The lease is ours: renew it.
    Renew,
    /// Another replica holds a live lease: wait and read again.
    StandBy { holder: String },
}

/// One replica's view of the election.
#[derive(Debug, Clone)]
pub struct Candidate {
    identity: String,
    times: LeaseTimes,
    /// The lease version last read, and when we first saw it.
    observed: Option<(String, Instant)>,
    /// We lead until then, unless a renewal moves it on.
    leading_until: Option<Instant>,
}

impl Candidate {
    pub fn new(identity: impl Into<String>, times: LeaseTimes) -> Self {
        Self { identity: identity.into(), times, observed: None, leading_until: None }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// What to do with the lease as just read (`None`: there is none).
    /// Seeing another holder ends our leadership at once.
    pub fn next_step(&mut self, lease: Option<&LeaseRecord>, now: Instant) -> LeaseStep {
        let Some(lease) = lease else {
            self.leading_until = None;
            return LeaseStep::Create;
        };
        let first_seen = match &self.observed {
            Some((version, seen)) if *version == lease.version => *seen,
            _ => now,
        };
        self.observed = Some((lease.version.clone(), first_seen));
        let holder = lease.holder.as_deref().filter(|h| !h.is_empty());
        if holder == Some(self.identity.as_str()) {
            return LeaseStep::Renew;
        }
        self.leading_until = None;
        let duration = lease.lease_duration.unwrap_or(self.times.lease_duration);
        match holder {
            Some(holder) if now < first_seen + duration => LeaseStep::StandBy { holder: holder.to_string() },
            _ => LeaseStep::Acquire,
        }
    }

    /// A create, take or renewal sent at `sent_at` succeeded and left the
    /// lease at `version`.
    pub fn written(&mut self, sent_at: Instant, version: String) {
        self.leading_until = Some(sent_at + self.times.renew_deadline);
        self.observed = Some((version, sent_at));
    }

    /// Until when we lead, if we do (as of the last renewal; it may be past).
    pub fn leading_until(&self) -> Option<Instant> {
        self.leading_until
    }

    /// The earliest another replica may take the lease over, as of the last
    /// renewal: it sees the lease unchanged for its duration from no sooner
    /// than we sent that renewal.
    pub fn handover_at(&self) -> Option<Instant> {
        self.leading_until.map(|until| until - self.times.renew_deadline + self.times.lease_duration)
    }

    pub fn is_leading(&self, now: Instant) -> bool {
        self.leading_until.is_some_and(|until| now < until)
    }

    /// We gave the lease up (at shutdown).
    pub fn step_down(&mut self) {
        self.leading_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMES: LeaseTimes = LeaseTimes {
        lease_duration: Duration::from_secs(4),
        renew_deadline: Duration::from_secs(3),
        retry_period: Duration::from_secs(1),
    };

    fn lease(holder: &str, version: &str) -> LeaseRecord {
        LeaseRecord {
            holder: (!holder.is_empty()).then(|| holder.to_string()),
            lease_duration: Some(TIMES.lease_duration),
            version: version.into(),
        }
    }

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    #[test]
    fn no_lease_is_created_and_a_released_one_taken_at_once() {
        let t0 = Instant::now();
        let mut me = Candidate::new("a", TIMES);
        assert_eq!(me.next_step(None, t0), LeaseStep::Create);
        assert_eq!(me.next_step(Some(&lease("", "1")), t0), LeaseStep::Acquire);
        assert!(!me.is_leading(t0), "leading only once a write succeeded");
        me.written(t0, "2".into());
        assert!(me.is_leading(t0));
        assert_eq!(me.next_step(Some(&lease("a", "2")), secs(t0, 1.0)), LeaseStep::Renew);
    }

    #[test]
    fn a_live_lease_of_another_is_left_until_it_stops_changing_for_the_lease_duration() {
        let t0 = Instant::now();
        let mut me = Candidate::new("b", TIMES);
        let standby = LeaseStep::StandBy { holder: "a".into() };
        assert_eq!(me.next_step(Some(&lease("a", "1")), t0), standby);
        // Renewed at 3 s: the clock starts again, whatever renewTime says.
        assert_eq!(me.next_step(Some(&lease("a", "2")), secs(t0, 3.0)), standby);
        assert_eq!(me.next_step(Some(&lease("a", "2")), secs(t0, 6.9)), standby);
        assert_eq!(me.next_step(Some(&lease("a", "2")), secs(t0, 7.0)), LeaseStep::Acquire);
    }

    #[test]
    fn a_fresh_replica_waits_a_whole_lease_duration_before_taking_a_lease_it_just_saw() {
        let t0 = Instant::now();
        let mut me = Candidate::new("b", TIMES);
        // The lease may have stopped changing long ago; we cannot know.
        assert!(matches!(me.next_step(Some(&lease("a", "9")), secs(t0, 100.0)), LeaseStep::StandBy { .. }));
        assert_eq!(me.next_step(Some(&lease("a", "9")), secs(t0, 104.0)), LeaseStep::Acquire);
    }

    #[test]
    fn the_holders_own_lease_duration_counts() {
        let t0 = Instant::now();
        let mut me = Candidate::new("b", TIMES);
        let mut long = lease("a", "1");
        long.lease_duration = Some(Duration::from_secs(15));
        me.next_step(Some(&long), t0);
        assert!(matches!(me.next_step(Some(&long), secs(t0, 14.0)), LeaseStep::StandBy { .. }));
        assert_eq!(me.next_step(Some(&long), secs(t0, 15.0)), LeaseStep::Acquire);
    }

    #[test]
    fn a_leader_that_cannot_renew_stops_at_its_deadline_before_anyone_may_take_over() {
        let t0 = Instant::now();
        let mut leader = Candidate::new("a", TIMES);
        let mut standby = Candidate::new("b", TIMES);
        leader.next_step(None, t0);
        leader.written(t0, "1".into());
        // The standby reads the lease just after the write landed.
        standby.next_step(Some(&lease("a", "1")), secs(t0, 0.1));
        // Renewals fail from now on (API server unreachable, or the process frozen).
        assert!(leader.is_leading(secs(t0, 2.9)));
        assert!(!leader.is_leading(secs(t0, 3.0)), "stopped at the renew deadline");
        // The standby can take over no sooner than the lease duration: after the leader stopped.
        let mut taken = None;
        for tenth in 1..100 {
            let now = secs(t0, f64::from(tenth) / 10.0);
            if standby.next_step(Some(&lease("a", "1")), now) == LeaseStep::Acquire {
                taken = Some(now);
                break;
            }
        }
        let taken = taken.expect("taken over");
        assert!(taken >= secs(t0, 4.0) && !leader.is_leading(taken));
        // Writes the leader sent must be carried out (or given up) by then.
        let handover = leader.handover_at().expect("as of the last renewal");
        assert!(handover == secs(t0, 4.0) && handover <= taken);
    }

    #[test]
    fn seeing_another_holder_ends_leadership_at_once() {
        let t0 = Instant::now();
        let mut me = Candidate::new("a", TIMES);
        me.next_step(None, t0);
        me.written(t0, "1".into());
        assert!(me.is_leading(secs(t0, 0.5)));
        assert_eq!(me.next_step(Some(&lease("b", "2")), secs(t0, 0.5)), LeaseStep::StandBy { holder: "b".into() });
        assert!(!me.is_leading(secs(t0, 0.5)));
        assert_eq!(me.leading_until(), None);
    }

    #[test]
    fn a_released_lease_is_free_and_stepping_down_ends_leadership() {
        let t0 = Instant::now();
        let mut me = Candidate::new("a", TIMES);
        me.written(t0, "1".into());
        me.step_down();
        assert!(!me.is_leading(t0));
        let mut other = Candidate::new("b", TIMES);
        assert_eq!(other.next_step(Some(&lease("", "2")), t0), LeaseStep::Acquire);
    }
}
