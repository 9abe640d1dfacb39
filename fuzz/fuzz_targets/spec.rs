//! Network specs (TOML, and JSON) from arbitrary text: parsed, resolved, initialised and built
//! into an ONNX graph, under the tools' memory budget.
#![no_main]

use ditac_tools::graph::{inference_model, init_params};
use ditac_tools::spec::Spec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A small budget: the fuzzer is after the logic (the budget's refusals included).
    ditac_tools::budget::set_max_bytes(16 << 20);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let spec = match Spec::from_toml(text) {
        Ok(s) => s,
        Err(_) => match serde_json::from_str::<Spec>(text) {
            Ok(s) => s,
            Err(_) => return,
        },
    };
    let Ok(net) = spec.resolve() else {
        return;
    };
    let Ok(params) = init_params(&net, 0) else {
        return;
    };
    let _ = inference_model(&net, &params).map(|b| b.build());
});
