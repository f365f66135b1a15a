//! The TC string decoder on arbitrary input: it must never panic, and whatever it accepts must
//! survive encoding and decoding again unchanged.

#![no_main]

use confiance_core::consent::tcf::{self, TcfError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Bytes that are not UTF-8 still reach the decoder, as the replacement character.
    let text = String::from_utf8_lossy(data);
    let Ok(model) = tcf::decode(&text) else {
        return;
    };
    match tcf::encode(&model) {
        Ok(again) => assert_eq!(tcf::decode(&again).as_ref(), Ok(&model), "{text}"),
        // Repeated restrictions of one purpose and type are merged on decoding, and the union
        // can need more than the 4,095 ranges one restriction can hold: the only refusal.
        Err(TcfError::TooManyEntries { .. }) => {}
        Err(e) => panic!("{text}: decoded, but cannot be encoded again: {e}"),
    }
});
