//! Exporting trained models to other runtimes: ONNX files of the networks ([`onnx`]), the
//! run folder export with `pipeline.json` and the evaluated points ([`bundle`]), and the
//! `.npy` files it writes ([`npy`]).

pub mod bundle;
pub mod npy;
pub mod onnx;
