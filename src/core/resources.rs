//! Amounts of node resources: what a node offers and what pods ask for.

use std::collections::BTreeMap;
use std::fmt;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const PODS: &str = "pods";
pub const GPU: &str = "nvidia.com/gpu";

/// Amounts by resource name. CPU is counted in millicores, everything else in
/// whole units (bytes, pods, devices), as kube-scheduler counts them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Resources(BTreeMap<String, i64>);

impl Resources {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: &str, amount: i64) -> Self {
        self.set(name, amount);
        self
    }

    pub fn set(&mut self, name: &str, amount: i64) {
        if amount == 0 {
            self.0.remove(name);
        } else {
            self.0.insert(name.to_string(), amount);
        }
    }

    pub fn get(&self, name: &str) -> i64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
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

    /// The names of the resources in `request` that `self` (the free amount)
    /// cannot cover.
    pub fn shortfalls<'a>(&'a self, request: &'a Resources) -> impl Iterator<Item = &'a str> + 'a {
        request.iter().filter(|(name, amount)| *amount > self.get(name)).map(|(name, _)| name)
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
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
        let free = Resources::new().with(CPU, 1000).with(GPU, 1);
        let ask = Resources::new().with(CPU, 500).with(GPU, 2).with(MEMORY, 1);
        let missing: Vec<_> = free.shortfalls(&ask).collect();
        assert_eq!(missing, vec![MEMORY, GPU]);
    }
}
