//! Parameter files in NumPy .npz form (zip archives of .npy arrays) from arbitrary bytes.
#![no_main]

use ditac_tools::params::Params;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Params::from_npz(data);
});
