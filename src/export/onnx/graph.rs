//! A small ONNX graph builder (initializers, nodes with one output, typed inputs/outputs
//! with a dynamic batch dimension) and the model wrapper (IR version 8, opset 17).

use super::proto::{dtype, tensor, value_info, Dim, Msg};

/// ONNX IR version of the files written.
pub const IR_VERSION: i64 = 8;
/// Default-domain opset of the files written.
pub const OPSET: i64 = 17;
/// Name of the dynamic batch dimension.
pub const BATCH: &str = "batch";

/// A graph under construction.
pub struct Graph {
    name: String,
    nodes: Vec<Msg>,
    inits: Vec<Msg>,
    inputs: Vec<Msg>,
    outputs: Vec<Msg>,
    next: usize,
}

impl Graph {
    pub fn new(name: &str) -> Self {
        Graph {
            name: name.into(),
            nodes: vec![],
            inits: vec![],
            inputs: vec![],
            outputs: vec![],
            next: 0,
        }
    }

    fn fresh(&mut self, stem: &str) -> String {
        self.next += 1;
        format!("{stem}_{}", self.next)
    }

    /// A float32 initializer; returns its name.
    pub fn f32(&mut self, stem: &str, dims: &[usize], data: &[f32]) -> String {
        assert_eq!(
            dims.iter().product::<usize>(),
            data.len(),
            "{stem}: dims fit data"
        );
        let name = self.fresh(stem);
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.inits.push(tensor(&name, dims, dtype::FLOAT, &raw));
        name
    }

    /// An int64 initializer; returns its name.
    pub fn i64(&mut self, stem: &str, dims: &[usize], data: &[i64]) -> String {
        let name = self.fresh(stem);
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.inits.push(tensor(&name, dims, dtype::INT64, &raw));
        name
    }

    /// A node `op(inputs)` with attributes; its one output is `out` or a fresh name.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<Msg>,
        out: Option<&str>,
    ) -> String {
        let out = out.map_or_else(|| self.fresh(&op.to_lowercase()), str::to_string);
        let mut m = Msg::default();
        for i in inputs {
            m = m.str(1, i);
        }
        m = m
            .str(2, &out)
            .str(3, &format!("{op}_{}", self.nodes.len()))
            .str(4, op);
        for a in &attrs {
            m = m.msg(5, a);
        }
        self.nodes.push(m);
        out
    }

    /// A graph input `[batch, dims…]`.
    pub fn input(&mut self, name: &str, elem: i64, dims: &[usize]) {
        self.inputs.push(value_info(name, elem, &batched(dims)));
    }

    /// A graph output `[batch, dims…]` (float32).
    pub fn output(&mut self, name: &str, dims: &[usize]) {
        self.outputs
            .push(value_info(name, dtype::FLOAT, &batched(dims)));
    }

    /// The serialised `ModelProto`.
    pub fn model(self, doc: &str) -> Vec<u8> {
        let mut g = Msg::default();
        for n in &self.nodes {
            g = g.msg(1, n);
        }
        g = g.str(2, &self.name);
        for i in &self.inits {
            g = g.msg(5, i);
        }
        g = g.str(10, doc);
        for i in &self.inputs {
            g = g.msg(11, i);
        }
        for o in &self.outputs {
            g = g.msg(12, o);
        }
        let opset = Msg::default().str(1, "").int(2, OPSET);
        let meta = Msg::default()
            .str(1, "diffnmf_version")
            .str(2, env!("CARGO_PKG_VERSION"));
        Msg::default()
            .int(1, IR_VERSION)
            .str(2, "diffnmf")
            .str(3, env!("CARGO_PKG_VERSION"))
            .str(6, doc)
            .msg(7, &g)
            .msg(8, &opset)
            .msg(14, &meta)
            .0
    }
}

fn batched(dims: &[usize]) -> Vec<Dim> {
    std::iter::once(Dim::Named(BATCH))
        .chain(dims.iter().map(|&d| Dim::Fixed(d)))
        .collect()
}
