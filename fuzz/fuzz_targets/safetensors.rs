//! Parameter files in safetensors form from arbitrary bytes.
#![no_main]

use ditac_tools::params::Params;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Params::from_safetensors(data);
});
