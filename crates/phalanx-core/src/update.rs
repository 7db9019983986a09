//! What writing a record did, for the callers that act only on a change.

/// Whether a stored record (a node, a gang object, a quota, a topology
/// report) changed when it was written or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    Changed,
    Unchanged,
}

impl Update {
    pub fn is_changed(self) -> bool {
        self == Update::Changed
    }
}

impl From<bool> for Update {
    fn from(changed: bool) -> Self {
        if changed { Update::Changed } else { Update::Unchanged }
    }
}
