//! The decision core: pure code with no Kubernetes client and no async
//! runtime. The shell feeds it events and carries out what it decides.

pub mod framework;
pub mod node;
pub mod plugins;
pub mod pod;
pub mod quantity;
pub mod queue;
pub mod resources;
pub mod schedule;
pub mod snapshot;

#[cfg(test)]
pub(crate) fn test_pod(name: &str, requests: resources::Resources) -> pod::PodInfo {
    pod::PodInfo {
        uid: format!("uid-{name}"),
        key: pod::PodKey {
            namespace: "default".into(),
            name: name.into(),
        },
        resource_version: None,
        scheduler_name: "phalanx".into(),
        node_name: None,
        phase: pod::PodPhase::Pending,
        terminating: false,
        requests,
        node_selector: Default::default(),
        required_terms: vec![],
        preferred_terms: vec![],
        tolerations: vec![],
        priority: 0,
        created: 0,
    }
}

#[cfg(test)]
pub(crate) fn profile_with_defaults() -> framework::Profile {
    plugins::default_profile("phalanx")
}
