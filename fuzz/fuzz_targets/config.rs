//! Feeds arbitrary bytes to the scheduler configuration loader: it must never
//! panic, and every refusal must name the field it is about.

#![no_main]

use libfuzzer_sys::fuzz_target;
use phalanx::config::{FieldError, parse};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(FieldError(field, message)) = parse(&text) {
        assert!(!field.is_empty() && !message.is_empty());
    }
});
