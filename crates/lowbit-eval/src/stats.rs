//! Error statistics of a quantized tensor against its FP32 reference: MSE, cosine similarity,
//! SQNR and max abs error, accumulated over batches in f64 in a fixed order (deterministic).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A decibel value that may be `+inf` (identical tensors). JSON has no infinity, so it is
/// written as the number when finite and as the string `"inf"` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Db(pub f64);

impl Db {
    /// Whether the value is `+inf`.
    pub fn is_inf(self) -> bool {
        self.0.is_infinite() && self.0 > 0.0
    }
}

impl std::fmt::Display for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_inf() {
            f.write_str("inf")
        } else if self.0.is_nan() {
            f.write_str("nan")
        } else {
            write!(f, "{:.2}", self.0)
        }
    }
}

impl Serialize for Db {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_finite() {
            s.serialize_f64(self.0)
        } else if self.is_inf() {
            s.serialize_str("inf")
        } else {
            s.serialize_str("nan")
        }
    }
}

impl<'de> Deserialize<'de> for Db {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Db, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(x) => Ok(Db(x)),
            Raw::S(s) if s == "inf" => Ok(Db(f64::INFINITY)),
            Raw::S(s) if s == "nan" => Ok(Db(f64::NAN)),
            Raw::S(s) => Err(serde::de::Error::custom(format!(
                "expected a number, \"inf\" or \"nan\", got \"{s}\""
            ))),
        }
    }
}

/// Running sums for [`ErrorStats`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ErrorAccumulator {
    n: u64,
    sum_x2: f64,
    sum_q2: f64,
    sum_xq: f64,
    sum_e2: f64,
    max_abs: f64,
}

impl ErrorAccumulator {
    /// Adds a reference `x` and its quantized counterpart `q` (same length).
    pub fn add(&mut self, x: &[f32], q: &[f32]) {
        // Eight independent f64 lanes per sum (element i goes to lane i mod 8, lanes are added
        // in a fixed order at the end): the compiler vectorises it, and the result depends
        // only on the data, never on threads or batch boundaries within one call.
        const L: usize = 8;
        let n = x.len().min(q.len());
        let (x, q) = (&x[..n], &q[..n]);
        let mut x2 = [0f64; L];
        let mut q2 = [0f64; L];
        let mut xq = [0f64; L];
        let mut e2 = [0f64; L];
        let mut mx = [0f64; L];
        let mut nan = false;
        let (xc, qc) = (x.chunks_exact(L), q.chunks_exact(L));
        let (xr, qr) = (xc.remainder(), qc.remainder());
        for (xs, qs) in xc.zip(qc) {
            for k in 0..L {
                let (a, b) = (f64::from(xs[k]), f64::from(qs[k]));
                let e = a - b;
                x2[k] += a * a;
                q2[k] += b * b;
                xq[k] += a * b;
                e2[k] += e * e;
                let ae = e.abs();
                nan |= ae.is_nan();
                mx[k] = if ae > mx[k] { ae } else { mx[k] };
            }
        }
        for (k, (&a, &b)) in xr.iter().zip(qr).enumerate() {
            let (a, b) = (f64::from(a), f64::from(b));
            let e = a - b;
            x2[k] += a * a;
            q2[k] += b * b;
            xq[k] += a * b;
            e2[k] += e * e;
            let ae = e.abs();
            nan |= ae.is_nan();
            mx[k] = if ae > mx[k] { ae } else { mx[k] };
        }
        for k in 0..L {
            self.sum_x2 += x2[k];
            self.sum_q2 += q2[k];
            self.sum_xq += xq[k];
            self.sum_e2 += e2[k];
            if mx[k] > self.max_abs {
                self.max_abs = mx[k];
            }
        }
        if nan {
            self.max_abs = f64::NAN;
        }
        self.n += n as u64;
    }

    /// Merges another accumulator (sums in the order given).
    pub fn merge(&mut self, o: &ErrorAccumulator) {
        self.n += o.n;
        self.sum_x2 += o.sum_x2;
        self.sum_q2 += o.sum_q2;
        self.sum_xq += o.sum_xq;
        self.sum_e2 += o.sum_e2;
        if o.max_abs > self.max_abs || o.max_abs.is_nan() {
            self.max_abs = o.max_abs;
        }
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The statistics.
    pub fn finish(&self) -> ErrorStats {
        let n = self.n.max(1) as f64;
        let cosine = if self.sum_x2 == 0.0 && self.sum_q2 == 0.0 {
            1.0
        } else if self.sum_x2 == 0.0 || self.sum_q2 == 0.0 {
            0.0
        } else {
            self.sum_xq / (self.sum_x2.sqrt() * self.sum_q2.sqrt())
        };
        ErrorStats {
            elements: self.n,
            mse: self.sum_e2 / n,
            cosine,
            sqnr_db: sqnr(self.sum_x2, self.sum_e2),
            max_abs_error: self.max_abs,
        }
    }
}

/// `10 · log10(Σx² / Σ(x − q)²)`: `+inf` when the error is zero.
pub fn sqnr(signal: f64, noise: f64) -> Db {
    if noise == 0.0 {
        Db(f64::INFINITY)
    } else {
        Db(10.0 * (signal / noise).log10())
    }
}

/// Error of a quantized tensor against its FP32 reference.
///
/// ```
/// use lowbit_eval::ErrorAccumulator;
/// let mut acc = ErrorAccumulator::default();
/// acc.add(&[1.0, 2.0], &[1.0, 2.0]);
/// let s = acc.finish();
/// assert!(s.sqnr_db.is_inf());
/// assert!((s.cosine - 1.0).abs() < 1e-12);
/// acc.add(&[3.0], &[2.0]);
/// let s = acc.finish();
/// assert!((s.sqnr_db.0 - 10.0 * 14f64.log10()).abs() < 1e-12); // Σx² = 14, Σe² = 1
/// assert_eq!(s.max_abs_error, 1.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorStats {
    /// Elements compared.
    pub elements: u64,
    /// Mean squared error.
    pub mse: f64,
    /// Cosine similarity of the flattened tensors.
    pub cosine: f64,
    /// Signal-to-quantization-noise ratio in dB (`"inf"` when identical).
    pub sqnr_db: Db,
    /// Largest absolute error.
    pub max_abs_error: f64,
}
