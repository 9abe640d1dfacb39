//! ONNX models from arbitrary bytes through what the tools do with them: parse, inspect, freeze,
//! lower and plot (in memory). Any outcome but a panic or an abort is fine.
#![no_main]

use ditac_tools::plot::activation as plot;
use ditac_tools::transform::{freeze, inspect, lower, ModelFile};
use libfuzzer_sys::fuzz_target;
use protobuf::Message;
use std::path::{Path, PathBuf};

fuzz_target!(|data: &[u8]| {
    // A small budget: tables of up to 2^24 nodes are legal and take seconds each to build; the
    // fuzzer is after the logic (the budget's refusals included), not the throughput.
    ditac_tools::budget::set_max_bytes(16 << 20);
    let Ok(model) = onnx_protobuf::ModelProto::parse_from_bytes(data) else {
        return;
    };
    if model.graph.is_none() {
        return;
    }
    // External data would be read from here: a folder that does not exist.
    let dir = Path::new("/nonexistent-ditac-fuzz");
    let mf = ModelFile {
        model: model.clone(),
        path: PathBuf::from("/nonexistent-ditac-fuzz/m.onnx"),
        dir: dir.to_path_buf(),
    };
    let _ = inspect::inspect(&mf, true);
    let _ = plot::model_plots(mf.graph(), dir, 16);
    let mut m = model.clone();
    let _ = freeze::freeze_model(&mut m, dir, None);
    let mut m = model;
    let _ = lower::lower_in_place(&mut m, dir, &lower::LowerOptions::default());
});
