//! Quotas, checked for a whole gang before any member binds:
//! `scheduling.x-k8s.io/v1alpha1` ElasticQuota (a namespace's min and max;
//! beyond min it may borrow only what other namespaces' min leave unused, as
//! scheduler-plugins' CapacityScheduling does) and the namespace's
//! ResourceQuota hard limits on requests. Usage is what the namespace's
//! placed pods request, as the snapshot counts it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use super::resources::{GPU, Resources};
use super::update::Update;

/// Per-resource limits; a resource not named is not limited.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Limits(pub BTreeMap<String, i64>);

impl Limits {
    pub fn get(&self, resource: &str) -> Option<i64> {
        self.0.get(resource).copied()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ElasticQuota {
    pub namespace: String,
    pub name: String,
    pub min: Limits,
    pub max: Limits,
}

/// A ResourceQuota's hard limits on requests (`requests.nvidia.com/gpu`,
/// `requests.cpu` or `cpu`, `pods`), by resource name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HardQuota {
    pub namespace: String,
    pub name: String,
    pub hard: Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum QuotaKind {
    Elastic,
    Hard,
}

/// An ElasticQuota or a ResourceQuota, as a watch delivers it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Quota {
    Elastic(ElasticQuota),
    Hard(HardQuota),
}

impl Quota {
    pub fn kind(&self) -> QuotaKind {
        match self {
            Quota::Elastic(_) => QuotaKind::Elastic,
            Quota::Hard(_) => QuotaKind::Hard,
        }
    }

    /// Namespace and name.
    pub fn key(&self) -> (&str, &str) {
        match self {
            Quota::Elastic(q) => (&q.namespace, &q.name),
            Quota::Hard(q) => (&q.namespace, &q.name),
        }
    }
}

/// A namespace's use of one resource its ElasticQuota names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaUsage {
    pub namespace: String,
    pub resource: String,
    pub used: i64,
    /// Beyond the namespace's ElasticQuota min.
    pub borrowed: i64,
}

/// Which limit a gang would break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaLimit {
    /// ElasticQuota max.
    Max,
    /// Beyond min, and other namespaces' unused min is not enough.
    Borrow { min: i64, lendable: i64 },
    /// ResourceQuota hard limit.
    Hard,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// "ElasticQuota team-a/quota"
    pub quota: String,
    pub namespace: String,
    pub resource: String,
    pub used: i64,
    pub limit: i64,
    pub need: i64,
    pub kind: QuotaLimit,
}

/// "GPUs" reads better than "nvidia.com/gpu" in a message.
fn resource_words(resource: &str) -> &str {
    if resource == GPU { "GPUs" } else { resource }
}

impl fmt::Display for QuotaExceeded {
    /// "team-a: 24 of 32 GPUs used, gang needs 16 (ElasticQuota team-a/quota max)"
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = resource_words(&self.resource);
        write!(f, "{}: {} of {} {what} used, gang needs {}", self.namespace, self.used, self.limit, self.need)?;
        match &self.kind {
            QuotaLimit::Max => write!(f, " ({} max)", self.quota),
            QuotaLimit::Hard => write!(f, " ({} hard limit)", self.quota),
            QuotaLimit::Borrow { min, lendable } => write!(
                f,
                " ({}: beyond its min of {min} it may borrow only unused min of other namespaces, {lendable} {what} now)",
                self.quota
            ),
        }
    }
}

/// The quotas of every namespace.
#[derive(Debug, Default, Clone)]
pub struct QuotaBook {
    elastic: HashMap<String, ElasticQuota>,
    hard: BTreeMap<(String, String), HardQuota>,
}

impl QuotaBook {
    pub fn set_elastic(&mut self, quota: ElasticQuota) -> Update {
        let changed = self.elastic.get(&quota.namespace) != Some(&quota);
        self.elastic.insert(quota.namespace.clone(), quota);
        changed.into()
    }

    pub fn set_hard(&mut self, quota: HardQuota) -> Update {
        let key = (quota.namespace.clone(), quota.name.clone());
        let changed = self.hard.get(&key) != Some(&quota);
        self.hard.insert(key, quota);
        changed.into()
    }

    /// `Changed` if the quota was there.
    pub fn remove(&mut self, kind: QuotaKind, namespace: &str, name: &str) -> Update {
        let removed = match kind {
            QuotaKind::Elastic => {
                let matches = self.elastic.get(namespace).is_some_and(|q| q.name == name);
                matches && self.elastic.remove(namespace).is_some()
            }
            QuotaKind::Hard => self.hard.remove(&(namespace.to_string(), name.to_string())).is_some(),
        };
        removed.into()
    }

    /// After a (re-)list: quotas of `kind` not in `listed` (namespace, name) are gone.
    pub fn listed(&mut self, kind: QuotaKind, listed: &[(String, String)]) {
        let known = |ns: &str, name: &str| listed.iter().any(|(n, m)| n == ns && m == name);
        match kind {
            QuotaKind::Elastic => self.elastic.retain(|_, q| known(&q.namespace, &q.name)),
            QuotaKind::Hard => self.hard.retain(|(ns, name), _| known(ns, name)),
        }
    }

    /// Whether any quota (elastic or hard) limits the namespace.
    pub fn limits_namespace(&self, namespace: &str) -> bool {
        self.elastic.contains_key(namespace) || self.hard.values().any(|q| q.namespace == namespace)
    }

    pub fn elastic(&self, namespace: &str) -> Option<&ElasticQuota> {
        self.elastic.get(namespace)
    }

    pub fn elastic_quotas(&self) -> impl Iterator<Item = &ElasticQuota> {
        self.elastic.values()
    }

    /// The ResourceQuotas of one namespace.
    pub fn hard_quotas<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a HardQuota> {
        self.hard.values().filter(move |q| q.namespace == namespace)
    }

    /// Whether `namespace`, using `usage`, may place pods requesting `need`.
    /// `usage_of` gives any namespace's current usage.
    pub fn check<'a>(
        &self,
        namespace: &str,
        need: &Resources,
        usage_of: impl Fn(&str) -> Option<&'a Resources>,
    ) -> Result<(), QuotaExceeded> {
        let empty = Resources::new();
        let used = usage_of(namespace).unwrap_or(&empty);
        for quota in self.hard.values().filter(|q| q.namespace == namespace) {
            for (resource, amount) in need.iter() {
                if let Some(limit) = quota.hard.get(resource)
                    && used.get(resource).saturating_add(amount) > limit
                {
                    return Err(QuotaExceeded {
                        quota: format!("ResourceQuota {namespace}/{}", quota.name),
                        namespace: namespace.to_string(),
                        resource: resource.to_string(),
                        used: used.get(resource),
                        limit,
                        need: amount,
                        kind: QuotaLimit::Hard,
                    });
                }
            }
        }
        let Some(quota) = self.elastic.get(namespace) else { return Ok(()) };
        let name = format!("ElasticQuota {namespace}/{}", quota.name);
        for (resource, amount) in need.iter() {
            let after = used.get(resource).saturating_add(amount);
            let exceeded = |limit: i64, kind: QuotaLimit| QuotaExceeded {
                quota: name.clone(),
                namespace: namespace.to_string(),
                resource: resource.to_string(),
                used: used.get(resource),
                limit,
                need: amount,
                kind,
            };
            if let Some(max) = quota.max.get(resource)
                && after > max
            {
                return Err(exceeded(max, QuotaLimit::Max));
            }
            let Some(min) = quota.min.get(resource) else { continue };
            if after <= min {
                continue;
            }
            // Borrowing: the namespaces with an ElasticQuota share the sum of
            // their mins; beyond its own min, a namespace may only take room
            // that the others leave unused.
            let lendable = self.pool_room(resource, &usage_of);
            if amount > lendable {
                return Err(exceeded(
                    used.get(resource).saturating_add(lendable),
                    QuotaLimit::Borrow { min, lendable },
                ));
            }
        }
        Ok(())
    }

    /// The sum of every ElasticQuota's min less the sum of their usage.
    fn pool_room<'a>(&self, resource: &str, usage_of: &impl Fn(&str) -> Option<&'a Resources>) -> i64 {
        // Saturating: absurd mins (the API server takes "5E") must not overflow.
        let sum = |amounts: &mut dyn Iterator<Item = i64>| amounts.fold(0i64, i64::saturating_add);
        let min = sum(&mut self.elastic.values().map(|q| q.min.get(resource).unwrap_or(0)));
        let used = sum(&mut self.elastic.values().map(|q| usage_of(&q.namespace).map_or(0, |u| u.get(resource))));
        (min - used).max(0)
    }

    /// How much `namespace` uses beyond its min (0 without an ElasticQuota).
    pub fn borrowed(&self, namespace: &str, resource: &str, used: &Resources) -> i64 {
        self.elastic.get(namespace).and_then(|q| q.min.get(resource)).map_or(0, |min| (used.get(resource) - min).max(0))
    }

    /// How far `namespace` is below its min (what it may reclaim).
    pub fn below_min(&self, namespace: &str, resource: &str, used: &Resources) -> i64 {
        self.elastic.get(namespace).and_then(|q| q.min.get(resource)).map_or(0, |min| (min - used.get(resource)).max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(gpus: i64) -> Limits {
        Limits([(GPU.to_string(), gpus)].into())
    }

    fn eq(ns: &str, min: i64, max: i64) -> ElasticQuota {
        ElasticQuota { namespace: ns.into(), name: "quota".into(), min: limits(min), max: limits(max) }
    }

    fn gpus(n: i64) -> Resources {
        Resources::new().with(GPU, n)
    }

    #[test]
    fn absurd_amounts_are_refused_without_overflow() {
        let mut book = QuotaBook::default();
        book.set_elastic(eq("a", 5_000_000_000_000_000_000, 6_000_000_000_000_000_000));
        book.set_elastic(eq("b", 5_000_000_000_000_000_000, i64::MAX));
        book.set_hard(HardQuota { namespace: "c".into(), name: "hard".into(), hard: limits(16) });
        let usage: HashMap<String, Resources> =
            [("a".to_string(), gpus(i64::MAX)), ("b".to_string(), gpus(1)), ("c".to_string(), gpus(8))].into();
        assert_eq!(book.check("a", &gpus(i64::MAX), |ns| usage.get(ns)).unwrap_err().kind, QuotaLimit::Max);
        assert!(book.check("b", &gpus(i64::MAX - 1), |ns| usage.get(ns)).is_err());
        assert_eq!(book.check("c", &gpus(i64::MAX), |ns| usage.get(ns)).unwrap_err().kind, QuotaLimit::Hard);
    }

    #[test]
    fn usage_never_exceeds_max_and_the_message_has_the_numbers() {
        let mut book = QuotaBook::default();
        book.set_elastic(eq("team-a", 32, 32));
        let usage: HashMap<String, Resources> = [("team-a".to_string(), gpus(24))].into();
        let err = book.check("team-a", &gpus(16), |ns| usage.get(ns)).unwrap_err();
        assert_eq!(err.to_string(), "team-a: 24 of 32 GPUs used, gang needs 16 (ElasticQuota team-a/quota max)");
        assert!(book.check("team-a", &gpus(8), |ns| usage.get(ns)).is_ok());
    }

    #[test]
    fn borrowing_beyond_min_comes_only_from_other_namespaces_unused_min() {
        let mut book = QuotaBook::default();
        book.set_elastic(eq("a", 16, 64));
        book.set_elastic(eq("b", 16, 64));
        let mut usage: HashMap<String, Resources> = [("a".to_string(), gpus(16)), ("b".to_string(), gpus(4))].into();
        // b leaves 12 of its min unused: a may borrow 12, not 13.
        assert!(book.check("a", &gpus(12), |ns| usage.get(ns)).is_ok());
        let err = book.check("a", &gpus(13), |ns| usage.get(ns)).unwrap_err();
        assert_eq!(err.kind, QuotaLimit::Borrow { min: 16, lendable: 12 });
        // Once a has borrowed 8, only 4 are left to lend.
        usage.insert("a".into(), gpus(24));
        assert!(book.check("a", &gpus(5), |ns| usage.get(ns)).is_err());
        assert!(book.check("a", &gpus(4), |ns| usage.get(ns)).is_ok());
        // b is within its min whatever a borrowed.
        assert!(book.check("b", &gpus(12), |ns| usage.get(ns)).is_ok());
        assert_eq!(book.borrowed("a", GPU, &usage["a"]), 8);
        assert_eq!(book.below_min("b", GPU, &usage["b"]), 12);
    }

    #[test]
    fn resource_quota_hard_limits_hold_as_well() {
        let mut book = QuotaBook::default();
        book.set_hard(HardQuota { namespace: "a".into(), name: "gpus".into(), hard: limits(8) });
        let usage: HashMap<String, Resources> = [("a".to_string(), gpus(4))].into();
        let err = book.check("a", &gpus(8), |ns| usage.get(ns)).unwrap_err();
        assert_eq!(err.to_string(), "a: 4 of 8 GPUs used, gang needs 8 (ResourceQuota a/gpus hard limit)");
        assert!(book.check("other", &gpus(800), |ns| usage.get(ns)).is_ok(), "no quota, no limit");
        book.listed(QuotaKind::Hard, &[]);
        assert!(book.check("a", &gpus(8), |ns| usage.get(ns)).is_ok());
    }
}
