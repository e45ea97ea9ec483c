//! Optimizer updates, one tensor at a time, as elementwise core ops with the semantics of
//! ONNX's `ai.onnx.preview.training` reference (computed in the tensor's element type; the
//! learning rate `r` is converted to it, the step count `t` is an i64 scalar and `t > 0`
//! selects the bias-corrected forms at run time). The ONNX importer (`Momentum`, `Adam`,
//! `Adagrad`) and the training-step builder ([`super::step`]) both build their updates here.
//!
//! - [`sgd`]: `x' = x - r (g + decay x)`.
//! - [`adagrad`]: `g = norm x + g`, `h' = h + g²`, `x' = x - r / (1 + t decay) · g / (sqrt(h') + eps)`.
//! - [`momentum`]: `g = norm x + g`, `v' = alpha v + (t > 0 ? beta : 1) g`; standard:
//!   `x' = x - r v'`, Nesterov: `x' = x - r (g + alpha v')`.
//! - [`adam`]: `g = norm x + g`, `v' = alpha v + (1 - alpha) g`, `h' = beta h + (1 - beta) g²`,
//!   `r' = t > 0 ? r sqrt(1 - beta^t) / (1 - alpha^t) : r`,
//!   `x' = (1 - post) (x - r' v' / (sqrt(h') + eps))`; with `decoupled` (AdamW, Loshchilov &
//!   Hutter) instead `x' = x - r decoupled x - r' v' / (sqrt(h') + eps)`.

use terafab_ir::{BinaryOp, CompareOp, DType, UnaryOp, ValueId};

use super::emit::Emit;

/// `k * x + y` for a scalar constant `k` (just `y` when `k` is 0).
fn axpy<E: Emit>(e: &mut E, k: f64, x: ValueId, y: ValueId) -> Result<ValueId, E::Error> {
    if k == 0.0 {
        return Ok(y);
    }
    let kv = e.splat(k, e.dtype_of(x))?;
    let kx = e.bin(BinaryOp::Mul, kv, x)?;
    e.bin(BinaryOp::Add, kx, y)
}

/// `sqrt(h) + eps`.
fn sqrt_eps<E: Emit>(e: &mut E, h: ValueId, eps: f64) -> Result<ValueId, E::Error> {
    let s = e.un(UnaryOp::Sqrt, h)?;
    let k = e.splat(eps, e.dtype_of(h))?;
    e.bin(BinaryOp::Add, s, k)
}

/// `t > 0` as a bool scalar (for an i64 scalar `t`).
pub fn t_positive<E: Emit>(e: &mut E, t: ValueId) -> Result<ValueId, E::Error> {
    let zero = e.splat(0.0, DType::I64)?;
    e.cmp(CompareOp::Gt, t, zero)
}

/// Plain gradient descent with L2 weight decay `decay`: the new `x`.
pub fn sgd<E: Emit>(
    e: &mut E,
    r: ValueId,
    x: ValueId,
    g: ValueId,
    decay: f64,
) -> Result<ValueId, E::Error> {
    let dt = e.dtype_of(x);
    let r = e.conv(r, dt)?;
    let g = axpy(e, decay, x, g)?;
    let step = e.bin(BinaryOp::Mul, r, g)?;
    e.bin(BinaryOp::Sub, x, step)
}

/// Adagrad: the new `x` and `h`.
#[allow(clippy::too_many_arguments)]
pub fn adagrad<E: Emit>(
    e: &mut E,
    r: ValueId,
    t: ValueId,
    x: ValueId,
    g: ValueId,
    h: ValueId,
    decay: f64,
    eps: f64,
    norm: f64,
) -> Result<(ValueId, ValueId), E::Error> {
    let dt = e.dtype_of(x);
    // r / (1 + t * decay_factor)
    let r = e.conv(r, dt)?;
    let t = e.conv(t, dt)?;
    let one = e.splat(1.0, dt)?;
    let td = axpy(e, decay, t, one)?;
    let r = e.bin(BinaryOp::Div, r, td)?;
    let g = axpy(e, norm, x, g)?;
    let g2 = e.bin(BinaryOp::Mul, g, g)?;
    let h_new = e.bin(BinaryOp::Add, h, g2)?;
    let d = sqrt_eps(e, h_new, eps)?;
    let step = e.bin(BinaryOp::Mul, r, g)?;
    let step = e.bin(BinaryOp::Div, step, d)?;
    Ok((e.bin(BinaryOp::Sub, x, step)?, h_new))
}

/// Momentum's hyperparameters (ONNX `Momentum` attributes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MomentumParams {
    pub alpha: f64,
    pub beta: f64,
    pub norm: f64,
    pub nesterov: bool,
}

/// Momentum (standard or Nesterov): the new `x` and `v`. `pos` is [`t_positive`] of the step.
pub fn momentum<E: Emit>(
    e: &mut E,
    r: ValueId,
    pos: ValueId,
    x: ValueId,
    g: ValueId,
    v: ValueId,
    p: MomentumParams,
) -> Result<(ValueId, ValueId), E::Error> {
    let dt = e.dtype_of(x);
    let r = e.conv(r, dt)?;
    let g = axpy(e, p.norm, x, g)?;
    // The gradient's coefficient is 1 at the first step.
    let b = e.splat(p.beta, dt)?;
    let one = e.splat(1.0, dt)?;
    let b = e.sel(pos, b, one)?;
    let bg = e.bin(BinaryOp::Mul, b, g)?;
    let a = e.splat(p.alpha, dt)?;
    let av = e.bin(BinaryOp::Mul, a, v)?;
    let v_new = e.bin(BinaryOp::Add, av, bg)?;
    let dir = if p.nesterov {
        let av2 = e.bin(BinaryOp::Mul, a, v_new)?;
        e.bin(BinaryOp::Add, g, av2)?
    } else {
        v_new
    };
    let step = e.bin(BinaryOp::Mul, r, dir)?;
    Ok((e.bin(BinaryOp::Sub, x, step)?, v_new))
}

/// Adam's hyperparameters (ONNX `Adam` attributes, plus AdamW's decoupled decay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamParams {
    pub alpha: f64,
    pub beta: f64,
    pub eps: f64,
    pub norm: f64,
    pub post: f64,
    /// AdamW's decoupled weight decay (0 for Adam).
    pub decoupled: f64,
}

impl Default for AdamParams {
    fn default() -> Self {
        AdamParams {
            alpha: 0.9,
            beta: 0.999,
            eps: 1e-6,
            norm: 0.0,
            post: 0.0,
            decoupled: 0.0,
        }
    }
}

/// Adam (or AdamW): the new `x`, `v` and `h`. `pos` is [`t_positive`] of the step.
#[allow(clippy::too_many_arguments)]
pub fn adam<E: Emit>(
    e: &mut E,
    r: ValueId,
    t: ValueId,
    pos: ValueId,
    x: ValueId,
    g: ValueId,
    v: ValueId,
    h: ValueId,
    p: AdamParams,
) -> Result<(ValueId, ValueId, ValueId), E::Error> {
    let dt = e.dtype_of(x);
    let g = axpy(e, p.norm, x, g)?;
    let a = e.splat(p.alpha, dt)?;
    let av = e.bin(BinaryOp::Mul, a, v)?;
    let v_new = axpy(e, 1.0 - p.alpha, g, av)?;
    let g2 = e.bin(BinaryOp::Mul, g, g)?;
    let b = e.splat(p.beta, dt)?;
    let bh = e.bin(BinaryOp::Mul, b, h)?;
    let h_new = axpy(e, 1.0 - p.beta, g2, bh)?;
    let d = sqrt_eps(e, h_new, p.eps)?;
    // Bias correction from the second step on: r sqrt(1 - beta^t) / (1 - alpha^t).
    let r0 = e.conv(r, dt)?;
    let tf = e.conv(t, dt)?;
    let one = e.splat(1.0, dt)?;
    let bt = e.bin(BinaryOp::Pow, b, tf)?;
    let at = e.bin(BinaryOp::Pow, a, tf)?;
    let nb = e.bin(BinaryOp::Sub, one, bt)?;
    let na = e.bin(BinaryOp::Sub, one, at)?;
    let sq = e.un(UnaryOp::Sqrt, nb)?;
    let rc = e.bin(BinaryOp::Mul, r0, sq)?;
    let rc = e.bin(BinaryOp::Div, rc, na)?;
    let rb = e.sel(pos, rc, r0)?;
    let q = e.bin(BinaryOp::Div, v_new, d)?;
    let step = e.bin(BinaryOp::Mul, rb, q)?;
    let mut x0 = x;
    if p.decoupled != 0.0 {
        let k = e.splat(p.decoupled, dt)?;
        let rk = e.bin(BinaryOp::Mul, r0, k)?;
        let dx = e.bin(BinaryOp::Mul, rk, x)?;
        x0 = e.bin(BinaryOp::Sub, x, dx)?;
    }
    let mut x_new = e.bin(BinaryOp::Sub, x0, step)?;
    if p.post != 0.0 {
        let k = e.splat(1.0 - p.post, dt)?;
        x_new = e.bin(BinaryOp::Mul, k, x_new)?;
    }
    Ok((x_new, v_new, h_new))
}
