//! Host ports a pod's containers ask for (`ports[].hostPort`).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PortProtocol {
    Tcp,
    Udp,
    Sctp,
}

/// One `hostPort` with its protocol and `hostIP` (empty in the spec means
/// every address, kept here as "0.0.0.0" as kube-scheduler does).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct HostPort {
    pub ip: String,
    pub protocol: PortProtocol,
    pub port: u16,
}

pub const ANY_ADDRESS: &str = "0.0.0.0";

impl HostPort {
    /// Two pods cannot both hold the same port and protocol on one address;
    /// the any-address binding takes the port on every address.
    pub fn conflicts_with(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == ANY_ADDRESS || other.ip == ANY_ADDRESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn port(ip: &str, protocol: PortProtocol, port: u16) -> HostPort {
        HostPort { ip: ip.into(), protocol, port }
    }

    #[rstest]
    #[case(port(ANY_ADDRESS, PortProtocol::Tcp, 80), true)]
    #[case(port("10.0.0.1", PortProtocol::Tcp, 80), true)]
    #[case(port("10.0.0.2", PortProtocol::Tcp, 80), false)]
    #[case(port("10.0.0.1", PortProtocol::Udp, 80), false)]
    #[case(port("10.0.0.1", PortProtocol::Tcp, 81), false)]
    fn conflicts_follow_address_protocol_and_port(#[case] other: HostPort, #[case] expected: bool) {
        let held = port("10.0.0.1", PortProtocol::Tcp, 80);
        assert_eq!(held.conflicts_with(&other), expected);
        assert_eq!(other.conflicts_with(&held), expected, "symmetric");
    }
}
