//! Feeds arbitrary bytes to the `nvidia-smi topo -m` parser: it must never
//! panic, and whatever it accepts must be a valid topology.

#![no_main]

use libfuzzer_sys::fuzz_target;
use phalanx::agent::nvidia_smi::parse;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(topology) = parse(&text) {
        assert_eq!(topology.validate(), Ok(()));
    }
});
