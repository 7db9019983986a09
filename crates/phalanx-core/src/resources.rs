//! Amounts of node resources: what a node offers and what pods ask for.

use std::collections::BTreeMap;
use std::fmt;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const PODS: &str = "pods";
pub const GPU: &str = "nvidia.com/gpu";

/// The resources every decision looks at, kept in fixed slots: a decision
/// reads them for every node, and a map keyed by strings was its main cost.
const KNOWN: [&str; 4] = [CPU, MEMORY, GPU, PODS];

/// Amounts by resource name. CPU is counted in millicores, everything else in
/// whole units (bytes, pods, devices), as kube-scheduler counts them.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    known: [i64; 4],
    /// Every other resource with a non-zero amount.
    other: BTreeMap<String, i64>,
}

fn slot(name: &str) -> Option<usize> {
    KNOWN.iter().position(|k| *k == name)
}

impl Resources {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: &str, amount: i64) -> Self {
        self.set(name, amount);
        self
    }

    pub fn set(&mut self, name: &str, amount: i64) {
        match slot(name) {
            Some(i) => self.known[i] = amount,
            None if amount == 0 => {
                self.other.remove(name);
            }
            None => {
                self.other.insert(name.to_string(), amount);
            }
        }
    }

    pub fn get(&self, name: &str) -> i64 {
        match slot(name) {
            Some(i) => self.known[i],
            None => self.other.get(name).copied().unwrap_or(0),
        }
    }

    /// Non-zero amounts: cpu, memory, nvidia.com/gpu, pods, then the rest by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        KNOWN
            .iter()
            .zip(self.known)
            .filter(|(_, v)| *v != 0)
            .map(|(k, v)| (*k, v))
            .chain(self.other.iter().map(|(k, v)| (k.as_str(), *v)))
    }

    pub fn add(&mut self, other: &Resources) {
        for (name, amount) in other.iter() {
            let total = self.get(name).saturating_add(amount);
            self.set(name, total);
        }
    }

    pub fn subtract(&mut self, other: &Resources) {
        for (name, amount) in other.iter() {
            let rest = self.get(name).saturating_sub(amount);
            self.set(name, rest);
        }
    }

    /// Element-wise maximum.
    pub fn raise_to(&mut self, other: &Resources) {
        for (name, amount) in other.iter() {
            if amount > self.get(name) {
                self.set(name, amount);
            }
        }
    }

    /// The names of the resources in this request that a node with
    /// `allocatable`, of which `requested` is taken, cannot cover. Allocates
    /// nothing: it runs for every node in every decision.
    pub fn shortfalls<'a>(
        &'a self,
        allocatable: &'a Resources,
        requested: &'a Resources,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.iter().filter(|(name, amount)| *amount > allocatable.get(name) - requested.get(name)).map(|(name, _)| name)
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a> FromIterator<(&'a str, i64)> for Resources {
    fn from_iter<I: IntoIterator<Item = (&'a str, i64)>>(iter: I) -> Self {
        let mut r = Resources::new();
        for (name, amount) in iter {
            r.set(name, amount);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_keeps_zero_entries_out() {
        let mut a = Resources::new().with(CPU, 1000).with(GPU, 2);
        a.subtract(&Resources::new().with(GPU, 2));
        assert_eq!(a, Resources::new().with(CPU, 1000));
        a.add(&Resources::new().with(MEMORY, 5));
        assert_eq!(a.get(MEMORY), 5);
        a.raise_to(&Resources::new().with(CPU, 500).with(PODS, 1));
        assert_eq!((a.get(CPU), a.get(PODS)), (1000, 1));
    }

    #[test]
    fn shortfalls_name_each_missing_resource() {
        let allocatable = Resources::new().with(CPU, 2000).with(GPU, 8);
        let taken = Resources::new().with(CPU, 1000).with(GPU, 7);
        let ask = Resources::new().with(CPU, 500).with(GPU, 2).with(MEMORY, 1);
        let missing: Vec<_> = ask.shortfalls(&allocatable, &taken).collect();
        assert_eq!(missing, vec![MEMORY, GPU]);
    }
}
