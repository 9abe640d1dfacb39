//! The README's Rust quickstart, compiled with the project (tests/docs/test_quickstart.py checks that
//! the README shows this program). Run: `cargo run --release --example run_model` from a folder with
//! libonnxruntime.so, libditac.so and a model.onnx with input `x` [N, 2] and output `y`.
use ort::{session::Session, value::Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = ort::init_from("libonnxruntime.so")?
        .with_name("app")
        .build()?;
    let mut session = Session::builder(&env)?
        .with_operator_library("libditac.so")?
        .commit_from_file("model.onnx")?;
    let x = Tensor::from_array((vec![1usize, 2], vec![0.1f32, -1.0]))?;
    let outputs = session.run(ort::inputs!["x" => x])?;
    let (_shape, y) = outputs["y"].try_extract_tensor::<f32>()?;
    println!("{y:?}");
    Ok(())
}
