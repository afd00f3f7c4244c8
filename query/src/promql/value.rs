//! Query results as the API returns them: scalar, instant vector, range vector (matrix) or string.

use fleetgate_store::Labels;

/// The bit pattern Prometheus uses for a staleness marker (a NaN that ends a series).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True when `v` is the staleness marker (not just any NaN).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// The staleness marker as a float.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Warnings and infos collected while evaluating a query (Prometheus's annotations), each once,
/// in the order first raised. The texts are Prometheus's, including the `PromQL warning: ` /
/// `PromQL info: ` prefix, but without the `(line:col)` position Prometheus appends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// Warnings: the result may be wrong or incomplete (e.g. a quantile outside [0, 1]).
    pub warnings: Vec<String>,
    /// Infos: the query may not do what was meant (e.g. `rate` of a name that is not a counter's).
    pub infos: Vec<String>,
}

impl Annotations {
    /// Adds a warning unless already present.
    pub fn warn(&mut self, msg: impl Into<String>) {
        let m = msg.into();
        if !self.warnings.contains(&m) {
            self.warnings.push(m);
        }
    }

    /// Adds an info unless already present.
    pub fn info(&mut self, msg: impl Into<String>) {
        let m = msg.into();
        if !self.infos.contains(&m) {
            self.infos.push(m);
        }
    }

    /// True when there is neither a warning nor an info.
    pub fn is_empty(&self) -> bool {
        self.warnings.is_empty() && self.infos.is_empty()
    }
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Its labels.
    pub labels: Labels,
    /// Evaluation timestamp (ms).
    pub t_ms: i64,
    /// The value.
    pub value: f64,
}

/// One series of a range vector: points ascending by time.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its labels.
    pub labels: Labels,
    /// `(timestamp ms, value)` pairs, ascending.
    pub points: Vec<(i64, f64)>,
}

/// The result of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A single number at a time.
    Scalar {
        /// Evaluation timestamp (ms).
        t_ms: i64,
        /// The value.
        value: f64,
    },
    /// An instant vector (order is meaningful only after `sort`/`sort_desc`/`topk`...).
    Vector(Vec<Sample>),
    /// A range vector, sorted by labels.
    Matrix(Vec<Series>),
    /// A string literal.
    String {
        /// Evaluation timestamp (ms).
        t_ms: i64,
        /// The string.
        value: String,
    },
}

impl Value {
    /// The Prometheus API `resultType` of this value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
            Value::String { .. } => "string",
        }
    }
}
