//! The status of a `scheduling.x-k8s.io` PodGroup, worked out from the pods
//! that carry its label: the phase machine that scheduler-plugins' PodGroup
//! controller and coscheduling plugin drive between them, in one pure
//! function.
//!
//! The phases, in the order a healthy group passes through them:
//!
//! | phase | when |
//! |---|---|
//! | Pending | fewer pods exist than `minMember` (or it is below 1, which is invalid) |
//! | PreScheduling | enough pods exist; none is bound yet |
//! | Scheduling | some members are bound, fewer than `minMember` |
//! | Scheduled | at least `minMember` are bound |
//! | Running | at least `minMember` are running or have succeeded |
//! | Finished | at least `minMember` have succeeded (final) |
//! | Failed | a member failed while `minMember` had started (final) |
//!
//! Unlike a controller that moves one step per reconcile, [`next_status`]
//! returns where the group settles given what is observed now, so one write
//! brings the object up to date; a group whose pods all bind and run before
//! the first write goes straight from nothing to Running.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// `status.phase` of a PodGroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GroupPhase {
    Pending,
    PreScheduling,
    Scheduling,
    Scheduled,
    Running,
    Finished,
    Failed,
    /// Declared by the API (some members bound, the rest stuck); phalanx
    /// never sets it, and recomputes a group found in it.
    Unknown,
}

impl GroupPhase {
    pub const ALL: [GroupPhase; 8] = [
        Self::Pending,
        Self::PreScheduling,
        Self::Scheduling,
        Self::Scheduled,
        Self::Running,
        Self::Finished,
        Self::Failed,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::PreScheduling => "PreScheduling",
            Self::Scheduling => "Scheduling",
            Self::Scheduled => "Scheduled",
            Self::Running => "Running",
            Self::Finished => "Finished",
            Self::Failed => "Failed",
            Self::Unknown => "Unknown",
        }
    }

    /// The phase a status string names; `None` for an empty or unknown one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// Finished and Failed are final: the group is never looked at again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Finished | Self::Failed)
    }
}

impl std::fmt::Display for GroupPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the status records, with counts as plain numbers (absent = 0).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupStatus {
    pub phase: Option<GroupPhase>,
    /// `namespace/name` of the objects owning the group's pods, comma-separated.
    pub occupied_by: Option<String>,
    pub scheduled: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// When the first member was bound.
    pub schedule_start_time: Option<Timestamp>,
}

/// `status.phase` of a member pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl MemberPhase {
    /// A pod's `status.phase`: absent counts as Pending (the API server fills
    /// it in when the pod is created), an unrecognised value as Unknown.
    pub fn parse(text: Option<&str>) -> Self {
        match text {
            None | Some("Pending") => Self::Pending,
            Some("Running") => Self::Running,
            Some("Succeeded") => Self::Succeeded,
            Some("Failed") => Self::Failed,
            Some(_) => Self::Unknown,
        }
    }
}

/// One pod carrying the group's label, reduced to what the status counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSummary {
    pub name: String,
    /// Has a node (`spec.nodeName`), whatever its phase since.
    pub bound: bool,
    pub phase: MemberPhase,
    /// Names of the pod's owners (`metadata.ownerReferences[].name`).
    pub owners: Vec<String>,
}

/// A PodGroup's spec and members, as [`next_status`] reads them.
#[derive(Debug, Clone, Copy)]
pub struct GroupView<'a> {
    pub namespace: &'a str,
    /// `spec.minMember`. Below 1 the group is unreadable (the scheduler
    /// reports it and its pods wait), so it stays Pending.
    pub min_member: i32,
    pub members: &'a [MemberSummary],
}

/// Member counts by what the status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Tally {
    members: u32,
    scheduled: u32,
    running: u32,
    succeeded: u32,
    failed: u32,
}

fn tally(members: &[MemberSummary]) -> Tally {
    let mut t = Tally::default();
    for m in members {
        t.members += 1;
        t.scheduled += u32::from(m.bound);
        match m.phase {
            MemberPhase::Running => t.running += 1,
            MemberPhase::Succeeded => t.succeeded += 1,
            MemberPhase::Failed => t.failed += 1,
            MemberPhase::Pending | MemberPhase::Unknown => {}
        }
    }
    t
}

/// The phase the counts put a group in; checked from the last phase back,
/// so that the furthest one reached wins (Finished over Failed, as a gang
/// that did its work is finished even if a spare member failed).
fn phase_of(t: Tally, min_member: i32) -> GroupPhase {
    let Some(min) = u32::try_from(min_member).ok().filter(|m| *m >= 1) else {
        return GroupPhase::Pending;
    };
    if t.members < min {
        GroupPhase::Pending
    } else if t.succeeded >= min {
        GroupPhase::Finished
    } else if t.failed > 0 && t.failed + t.running + t.succeeded >= min {
        GroupPhase::Failed
    } else if t.running + t.succeeded >= min {
        GroupPhase::Running
    } else if t.scheduled >= min {
        GroupPhase::Scheduled
    } else if t.scheduled > 0 {
        GroupPhase::Scheduling
    } else {
        GroupPhase::PreScheduling
    }
}

/// The sorted, comma-separated `namespace/owner` list of the first member
/// (by name) that has owners.
fn occupant(namespace: &str, members: &[MemberSummary]) -> Option<String> {
    let first = members.iter().filter(|m| !m.owners.is_empty()).min_by(|a, b| a.name.cmp(&b.name))?;
    let mut refs: Vec<String> = first.owners.iter().map(|o| format!("{namespace}/{o}")).collect();
    refs.sort();
    refs.dedup();
    Some(refs.join(","))
}

/// The status a group should have now.
///
/// - A final status (Finished, Failed) is returned unchanged, counts included.
/// - Counts are recomputed from the members every time: `scheduled` is the
///   number bound to a node, the others count members by pod phase.
/// - The phase follows from the counts (see the module table); a group that
///   loses members falls back to Pending, and one with minMember below 1
///   stays there.
/// - `scheduleStartTime` is set to `now` (whole seconds) the first time any
///   member is bound, and kept after that.
/// - `occupiedBy` is filled once the group has all its members, from the
///   owners of the first member that has any, and kept after that.
pub fn next_status(current: &GroupStatus, group: GroupView<'_>, now: Timestamp) -> GroupStatus {
    if current.phase.is_some_and(GroupPhase::is_final) {
        return current.clone();
    }
    let t = tally(group.members);
    let phase = phase_of(t, group.min_member);
    let schedule_start_time = current
        .schedule_start_time
        .or_else(|| (t.scheduled > 0).then(|| Timestamp::from_second(now.as_second()).unwrap_or(now)));
    let occupied_by = current
        .occupied_by
        .clone()
        .filter(|o| !o.is_empty())
        .or_else(|| (phase != GroupPhase::Pending).then(|| occupant(group.namespace, group.members)).flatten());
    GroupStatus {
        phase: Some(phase),
        occupied_by,
        scheduled: t.scheduled,
        running: t.running,
        succeeded: t.succeeded,
        failed: t.failed,
        schedule_start_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GroupPhase::*;
    use proptest::prelude::*;
    use rstest::rstest;

    const NOW: i64 = 1_700_000_000;

    fn now() -> Timestamp {
        Timestamp::from_second(NOW).unwrap()
    }

    /// A member from a short code: `p` pending unbound, `b` bound and
    /// pending, `r` running, `s` succeeded, `f` failed (all bound), `F`
    /// failed without ever being bound.
    fn member(i: usize, code: char) -> MemberSummary {
        let (bound, phase) = match code {
            'p' => (false, MemberPhase::Pending),
            'b' => (true, MemberPhase::Pending),
            'r' => (true, MemberPhase::Running),
            's' => (true, MemberPhase::Succeeded),
            'f' => (true, MemberPhase::Failed),
            'F' => (false, MemberPhase::Failed),
            'u' => (true, MemberPhase::Unknown),
            other => panic!("unknown member code {other}"),
        };
        MemberSummary { name: format!("worker-{i}"), bound, phase, owners: vec![] }
    }

    fn members(codes: &str) -> Vec<MemberSummary> {
        codes.chars().enumerate().map(|(i, c)| member(i, c)).collect()
    }

    fn next(current: &GroupStatus, min: i32, codes: &str) -> GroupStatus {
        next_status(current, GroupView { namespace: "ns", min_member: min, members: &members(codes) }, now())
    }

    fn in_phase(phase: GroupPhase) -> GroupStatus {
        GroupStatus { phase: Some(phase), ..Default::default() }
    }

    #[rstest]
    // A new group, and one still short of members.
    #[case(None, 2, "", Pending)]
    #[case(None, 2, "p", Pending)]
    #[case(Some(Pending), 2, "p", Pending)]
    // Enough members, none bound.
    #[case(Some(Pending), 2, "pp", PreScheduling)]
    #[case(Some(Pending), 2, "ppp", PreScheduling)]
    #[case(None, 2, "pp", PreScheduling)]
    // Some bound, then all.
    #[case(Some(PreScheduling), 2, "bp", Scheduling)]
    #[case(Some(PreScheduling), 2, "rp", Scheduling)]
    #[case(Some(Scheduling), 2, "bb", Scheduled)]
    #[case(Some(PreScheduling), 2, "bb", Scheduled)]
    // Running (succeeded members count as having run).
    #[case(Some(Scheduled), 2, "rb", Scheduled)]
    #[case(Some(Scheduled), 2, "rr", Running)]
    #[case(Some(Scheduled), 2, "rs", Running)]
    #[case(Some(Scheduling), 2, "rrp", Running)]
    // Finished once minMember have succeeded, even with a failed spare.
    #[case(Some(Running), 2, "ss", Finished)]
    #[case(Some(Running), 2, "ssf", Finished)]
    #[case(Some(Running), 2, "sr", Running)]
    // Failed when a member fails while the gang had started.
    #[case(Some(Running), 2, "fr", Failed)]
    #[case(Some(Running), 2, "fs", Failed)]
    #[case(Some(Scheduled), 2, "ff", Failed)]
    #[case(Some(Scheduling), 3, "fbp", Scheduling)]
    #[case(Some(PreScheduling), 2, "Fp", PreScheduling)]
    // Straight through, as when the first look comes late.
    #[case(None, 2, "rr", Running)]
    #[case(None, 2, "ss", Finished)]
    #[case(Some(Pending), 2, "fr", Failed)]
    // Members lost: back to Pending; fewer running: back to Scheduling.
    #[case(Some(Running), 2, "r", Pending)]
    #[case(Some(Scheduled), 3, "bb", Pending)]
    #[case(Some(Running), 2, "rp", Scheduling)]
    // An Unknown phase (set by someone else) is recomputed.
    #[case(Some(Unknown), 2, "rr", Running)]
    // minMember below 1 is unreadable: its pods wait, the group is Pending.
    #[case(None, 0, "", Pending)]
    #[case(None, 0, "pp", Pending)]
    #[case(Some(Running), -3, "rr", Pending)]
    fn phase_transitions(
        #[case] from: Option<GroupPhase>,
        #[case] min: i32,
        #[case] codes: &str,
        #[case] to: GroupPhase,
    ) {
        let current = GroupStatus { phase: from, ..Default::default() };
        assert_eq!(next(&current, min, codes).phase, Some(to), "{from:?} with {codes:?} (minMember {min})");
    }

    #[rstest]
    #[case(Finished, "")]
    #[case(Finished, "rr")]
    #[case(Failed, "ss")]
    #[case(Failed, "")]
    fn final_phases_are_kept_with_their_counts(#[case] phase: GroupPhase, #[case] codes: &str) {
        let current = GroupStatus { phase: Some(phase), succeeded: 2, ..Default::default() };
        assert_eq!(next(&current, 2, codes), current);
    }

    #[test]
    fn counts_come_from_the_members() {
        let status = next(&in_phase(Running), 3, "pbrrsfFu");
        assert_eq!(
            (status.scheduled, status.running, status.succeeded, status.failed),
            (6, 2, 1, 2),
            "bound: b r r s f u; F never bound"
        );
    }

    #[test]
    fn counts_are_updated_while_pending_too() {
        let status = next(&GroupStatus::default(), 4, "rp");
        assert_eq!((status.phase, status.scheduled, status.running), (Some(Pending), 1, 1));
    }

    #[test]
    fn schedule_start_time_is_set_at_the_first_bind_and_kept() {
        let pre = next(&GroupStatus::default(), 2, "pp");
        assert_eq!(pre.schedule_start_time, None, "nothing bound yet");
        let started = next(&pre, 2, "bp");
        assert_eq!(started.schedule_start_time, Some(now()));
        let later = next_status(
            &started,
            GroupView { namespace: "ns", min_member: 2, members: &members("rr") },
            Timestamp::from_second(NOW + 60).unwrap(),
        );
        assert_eq!(later.schedule_start_time, Some(now()), "kept once set");
        // Also set when every member is bound at once.
        assert_eq!(next(&pre, 2, "bb").schedule_start_time, Some(now()));
    }

    #[test]
    fn schedule_start_time_is_whole_seconds() {
        let now = Timestamp::from_millisecond(NOW * 1000 + 750).unwrap();
        let status = next_status(
            &GroupStatus::default(),
            GroupView { namespace: "ns", min_member: 1, members: &members("b") },
            now,
        );
        assert_eq!(status.schedule_start_time, Some(Timestamp::from_second(NOW).unwrap()));
    }

    #[test]
    fn occupied_by_names_the_owners_once_the_group_is_complete() {
        let mut ms = members("pp");
        ms[1].owners = vec!["job-b".into(), "job-a".into(), "job-a".into()];
        fn view(members: &[MemberSummary]) -> GroupView<'_> {
            GroupView { namespace: "team", min_member: 3, members }
        }
        let pending = next_status(&GroupStatus::default(), view(&ms), now());
        assert_eq!(pending.occupied_by, None, "not while Pending");
        ms.push(member(2, 'p'));
        let complete = next_status(&pending, view(&ms), now());
        assert_eq!(complete.occupied_by.as_deref(), Some("team/job-a,team/job-b"));
        // Kept, even when the owners change.
        ms[1].owners = vec!["other".into()];
        assert_eq!(next_status(&complete, view(&ms), now()).occupied_by, complete.occupied_by);
    }

    #[test]
    fn occupied_by_comes_from_the_first_owned_member_by_name() {
        let mut ms = members("ppp");
        ms[2].owners = vec!["late".into()];
        ms[1].owners = vec!["early".into()];
        let status =
            next_status(&GroupStatus::default(), GroupView { namespace: "ns", min_member: 2, members: &ms }, now());
        assert_eq!(status.occupied_by.as_deref(), Some("ns/early"));
        assert_eq!(next(&GroupStatus::default(), 2, "pp").occupied_by, None, "no owners, nothing to name");
    }

    #[test]
    fn phase_names_round_trip() {
        for phase in GroupPhase::ALL {
            assert_eq!(GroupPhase::parse(phase.as_str()), Some(phase));
        }
        assert_eq!(GroupPhase::parse(""), None);
        assert_eq!(GroupPhase::parse("Exploded"), None);
        assert_eq!(MemberPhase::parse(None), MemberPhase::Pending);
        assert_eq!(MemberPhase::parse(Some("Failed")), MemberPhase::Failed);
        assert_eq!(MemberPhase::parse(Some("Weird")), MemberPhase::Unknown);
    }

    fn arb_codes() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop::sample::select(vec!['p', 'b', 'r', 's', 'f', 'F', 'u']), 0..8)
            .prop_map(|v| v.into_iter().collect())
    }

    fn arb_phase() -> impl Strategy<Value = Option<GroupPhase>> {
        prop::option::of(prop::sample::select(GroupPhase::ALL.to_vec()))
    }

    proptest! {
        /// Applying the function again to its own result changes nothing:
        /// a status written once is not rewritten until something changes.
        #[test]
        fn settles_in_one_step(from in arb_phase(), min in -1i32..6, codes in arb_codes()) {
            let first = next(&GroupStatus { phase: from, ..Default::default() }, min, &codes);
            prop_assert_eq!(next(&first, min, &codes), first);
        }

        /// The counts never exceed the members, and the phase agrees with them.
        #[test]
        fn counts_and_phase_agree(min in 1i32..6, codes in arb_codes()) {
            let s = next(&GroupStatus::default(), min, &codes);
            let n = codes.len() as u32;
            let min = min as u32;
            prop_assert!(s.scheduled <= n && s.running + s.succeeded + s.failed <= n);
            match s.phase.unwrap() {
                Pending => prop_assert!(n < min),
                Finished => prop_assert!(s.succeeded >= min),
                Failed => prop_assert!(s.failed > 0 && s.failed + s.running + s.succeeded >= min),
                Running => prop_assert!(s.running + s.succeeded >= min),
                Scheduled => prop_assert!(s.scheduled >= min),
                Scheduling => prop_assert!(s.scheduled > 0 && s.scheduled < min),
                PreScheduling => prop_assert!(s.scheduled == 0 && n >= min),
                Unknown => prop_assert!(false, "never produced"),
            }
            prop_assert_eq!(s.schedule_start_time.is_some(), s.scheduled > 0);
        }
    }
}
