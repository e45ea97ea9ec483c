//! VJP rules of the elementwise ops: unary math, binary arithmetic, `select`.

use terafab_ir::{BinaryOp, CompareOp, UnaryOp, ValueId};

use super::{AutodiffError, Contribs, Grad};

impl Grad {
    /// `g * dy/dx` for `y = u(x)`; `None` for the piecewise-constant ops (zero gradient).
    pub(super) fn unary_vjp(
        &mut self,
        u: UnaryOp,
        x: ValueId,
        y: ValueId,
        g: ValueId,
    ) -> Result<Option<ValueId>, AutodiffError> {
        use BinaryOp::{Add, Div, Mul, Sub};
        use UnaryOp::*;
        let dt = self.ty(x).dtype;
        let r = match u {
            Neg => self.un(Neg, g)?,
            Abs => {
                let s = self.un(Sign, x)?;
                self.mul(g, s)?
            }
            Sign | Floor | Ceil | Round => return Ok(None),
            Not | IsNan | IsInf => return Ok(None),
            Exp => self.mul(g, y)?,
            Log => self.bin(Div, g, x)?,
            // g / (2 y)
            Sqrt => {
                let t = self.bin(Div, g, y)?;
                self.mul_k(t, 0.5)?
            }
            // -g y / (2 x)
            Rsqrt => {
                let t = self.mul(g, y)?;
                let t = self.bin(Div, t, x)?;
                self.mul_k(t, -0.5)?
            }
            Sin => {
                let c = self.un(Cos, x)?;
                self.mul(g, c)?
            }
            Cos => {
                let s = self.un(Sin, x)?;
                let t = self.mul(g, s)?;
                self.un(Neg, t)?
            }
            // g (1 + y^2)
            Tan => {
                let one = self.scalar(1.0, dt)?;
                let y2 = self.mul(y, y)?;
                let d = self.bin(Add, one, y2)?;
                self.mul(g, d)?
            }
            // ±g / sqrt(1 - x^2)
            Asin | Acos => {
                let one = self.scalar(1.0, dt)?;
                let x2 = self.mul(x, x)?;
                let d = self.bin(Sub, one, x2)?;
                let r = self.un(Rsqrt, d)?;
                let t = self.mul(g, r)?;
                if u == Acos { self.un(Neg, t)? } else { t }
            }
            // g / (1 + x^2)
            Atan => {
                let one = self.scalar(1.0, dt)?;
                let x2 = self.mul(x, x)?;
                let d = self.bin(Add, one, x2)?;
                self.bin(Div, g, d)?
            }
            Sinh => {
                let c = self.un(Cosh, x)?;
                self.mul(g, c)?
            }
            Cosh => {
                let s = self.un(Sinh, x)?;
                self.mul(g, s)?
            }
            // g (1 - y^2)
            Tanh => {
                let one = self.scalar(1.0, dt)?;
                let y2 = self.mul(y, y)?;
                let d = self.bin(Sub, one, y2)?;
                self.mul(g, d)?
            }
            // g / sqrt(x^2 ± 1)
            Asinh | Acosh => {
                let one = self.scalar(1.0, dt)?;
                let x2 = self.mul(x, x)?;
                let d = self.bin(if u == Asinh { Add } else { Sub }, x2, one)?;
                let r = self.un(Rsqrt, d)?;
                self.mul(g, r)?
            }
            // g / (1 - x^2)
            Atanh => {
                let one = self.scalar(1.0, dt)?;
                let x2 = self.mul(x, x)?;
                let d = self.bin(Sub, one, x2)?;
                self.bin(Div, g, d)?
            }
            // g 2/sqrt(pi) exp(-x^2)
            Erf => {
                let x2 = self.mul(x, x)?;
                let n = self.un(Neg, x2)?;
                let e = self.un(Exp, n)?;
                let t = self.mul(g, e)?;
                self.mul_k(t, std::f64::consts::FRAC_2_SQRT_PI)?
            }
            // g y (1 - y)
            Logistic => {
                let one = self.scalar(1.0, dt)?;
                let d = self.bin(Sub, one, y)?;
                let d = self.mul(y, d)?;
                self.bin(Mul, g, d)?
            }
        };
        Ok(Some(r))
    }

    /// Contributions to both operands of `z = b(x, y)`, summed back to their shapes.
    pub(super) fn binary_vjp(
        &mut self,
        b: BinaryOp,
        x: ValueId,
        y: ValueId,
        z: ValueId,
        g: ValueId,
        need: &[bool],
    ) -> Result<Contribs, AutodiffError> {
        use BinaryOp::*;
        let dt = self.ty(x).dtype;
        let (gx, gy) = match b {
            Add => (Some(g), Some(g)),
            Sub => (Some(g), Some(self.un(UnaryOp::Neg, g)?)),
            Mul => {
                let gx = if need[0] { Some(self.mul(g, y)?) } else { None };
                let gy = if need[1] { Some(self.mul(g, x)?) } else { None };
                (gx, gy)
            }
            // g / y and -g z / y
            Div => {
                let gx = self.bin(Div, g, y)?;
                let gy = if need[1] {
                    let t = self.mul(gx, z)?;
                    Some(self.un(UnaryOp::Neg, t)?)
                } else {
                    None
                };
                (Some(gx), gy)
            }
            // z = x - trunc(x / y) y: g and -g trunc(x / y)
            Rem => {
                let gy = if need[1] {
                    let q = self.bin(Div, x, y)?;
                    let one = self.scalar(1.0, dt)?;
                    let frac = self.bin(Rem, q, one)?;
                    let t = self.bin(Sub, q, frac)?;
                    let t = self.mul(g, t)?;
                    Some(self.un(UnaryOp::Neg, t)?)
                } else {
                    None
                };
                (Some(g), gy)
            }
            // g y x^(y-1) (0 where y == 0) and g z log(x) (0 where x == 0)
            Pow => {
                let zero = self.scalar(0.0, dt)?;
                let gx = if need[0] {
                    let one = self.scalar(1.0, dt)?;
                    let ym1 = self.bin(Sub, y, one)?;
                    let p = self.bin(Pow, x, ym1)?;
                    let d = self.mul(y, p)?;
                    let y0 = self.cmp(CompareOp::Eq, y, zero)?;
                    let d = self.select(y0, zero, d)?;
                    Some(self.mul(g, d)?)
                } else {
                    None
                };
                let gy = if need[1] {
                    let l = self.un(UnaryOp::Log, x)?;
                    let d = self.mul(z, l)?;
                    let x0 = self.cmp(CompareOp::Eq, x, zero)?;
                    let d = self.select(x0, zero, d)?;
                    Some(self.mul(g, d)?)
                } else {
                    None
                };
                (gx, gy)
            }
            // The operand equal to the result gets the gradient; equal operands share it.
            Max | Min => {
                let zero = self.scalar(0.0, dt)?;
                let half = self.scalar(0.5, dt)?;
                let one = self.scalar(1.0, dt)?;
                let ex = self.cmp(CompareOp::Eq, x, z)?;
                let ey = self.cmp(CompareOp::Eq, y, z)?;
                let part = |a: ValueId, b: ValueId, this: &mut Grad| {
                    let w = this.select(b, half, one)?;
                    let w = this.select(a, w, zero)?;
                    this.mul(g, w)
                };
                let gx = if need[0] {
                    Some(part(ex, ey, self)?)
                } else {
                    None
                };
                let gy = if need[1] {
                    Some(part(ey, ex, self)?)
                } else {
                    None
                };
                (gx, gy)
            }
            And | Or | Xor | ShiftLeft | ShiftRight => (None, None),
        };
        let xt = self.ty(x);
        let yt = self.ty(y);
        let gx = match gx {
            Some(v) if need[0] => Some(self.unbroadcast(v, &xt)?),
            _ => None,
        };
        let gy = match gy {
            Some(v) if need[1] => Some(self.unbroadcast(v, &yt)?),
            _ => None,
        };
        Ok(vec![gx, gy])
    }

    /// `select(c, a, b)`: the gradient goes to `a` where `c` holds and to `b` elsewhere.
    pub(super) fn select_vjp(
        &mut self,
        x: &[ValueId],
        g: ValueId,
        need: &[bool],
    ) -> Result<Contribs, AutodiffError> {
        let dt = self.ty(g).dtype;
        let zero = self.scalar(0.0, dt)?;
        let mut out = vec![None];
        for (i, &v) in x.iter().enumerate().skip(1) {
            if !need[i] {
                out.push(None);
                continue;
            }
            let s = if i == 1 {
                self.select(x[0], g, zero)?
            } else {
                self.select(x[0], zero, g)?
            };
            let t = self.ty(v);
            out.push(Some(self.unbroadcast(s, &t)?));
        }
        Ok(out)
    }
}
