//! The element-wise and attention steps of a Llama or Qwen2 pass, on f32 slices (safe Rust).

/// `out = x / rms(x) · weight`.
pub fn rms_norm(x: &[f32], weight: &[f32], epsilon: f32, out: &mut [f32]) {
    let mean = dot(x, x) / x.len() as f32;
    let scale = 1.0 / (mean + epsilon).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// ggml's rotary embedding for Llama: pairs `(2i, 2i + 1)` of each `head_dim`-wide head
/// turned by `angles[i]` (cos, sin).
pub fn rope_interleaved(heads: &mut [f32], head_dim: usize, angles: &[(f32, f32)]) {
    for head in heads.chunks_exact_mut(head_dim) {
        for (pair, &(cos, sin)) in head.chunks_exact_mut(2).zip(angles) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * cos - b * sin;
            pair[1] = a * sin + b * cos;
        }
    }
}

/// The NEOX-style rotary embedding (Qwen2, GPT-NeoX): pairs `(i, i + head_dim / 2)` of each
/// `head_dim`-wide head turned by `angles[i]` (cos, sin).
pub fn rope_halves(heads: &mut [f32], head_dim: usize, angles: &[(f32, f32)]) {
    let half = head_dim / 2;
    for head in heads.chunks_exact_mut(head_dim) {
        let (a, b) = head.split_at_mut(half);
        for ((x, y), &(cos, sin)) in a.iter_mut().zip(b.iter_mut()).zip(angles) {
            let (p, q) = (*x, *y);
            *x = p * cos - q * sin;
            *y = p * sin + q * cos;
        }
    }
}

/// `gate = silu(gate) · up`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `x += y`.
pub fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// A dot product in eight independent sums (so it vectorizes).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The shape of grouped-query attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// One token's attention: `query` (`heads · head_dim`) over the `keys` and `values` of
/// every position it sees (`[position][kv_heads · head_dim]`), into `out`. Query head `h`
/// reads key/value head `h / (heads / kv_heads)`.
pub fn attend(
    shape: Heads,
    query: &[f32],
    keys: &[f32],
    values: &[f32],
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let Heads {
        heads,
        kv_heads,
        head_dim: hd,
    } = shape;
    let kv = kv_heads * hd;
    let seen = keys.len() / kv;
    let group = heads / kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    scores.resize(seen, 0.0);
    out.fill(0.0);
    for head in 0..heads {
        let at = head / group * hd;
        let q = &query[head * hd..(head + 1) * hd];
        let mut max = f32::NEG_INFINITY;
        for (score, key) in scores.iter_mut().zip(keys.chunks_exact(kv)) {
            *score = dot(q, &key[at..at + hd]) * scale;
            max = max.max(*score);
        }
        let mut total = 0.0;
        for score in scores.iter_mut() {
            *score = (*score - max).exp();
            total += *score;
        }
        let o = &mut out[head * hd..(head + 1) * hd];
        for (score, value) in scores.iter().zip(values.chunks_exact(kv)) {
            let weight = score / total;
            for (o, v) in o.iter_mut().zip(&value[at..at + hd]) {
                *o += weight * v;
            }
        }
    }
}
