"""Closed-form compensation of one output projection (down_proj or o_proj) for removed inputs.

With W [out, n] the dense weight, K the kept input columns, P the removed ones and x the layer
input on calibration tokens (Gram H = sum x x^T, sum s = sum x, N tokens):

- bias: b' = b + W_P mean(x_P). Removing units then costs only their fluctuation around the
  mean (FLAP's bias compensation).
- ls: W_K' = argmin sum_t ||W x_t - W_K' x_K,t||^2 + ridge term
       = W_K + W_P H_PK (H_KK + r I)^-1, r = ridge * mean(diag H_KK).
  The kept columns absorb whatever of the removed units' contribution they can linearly
  predict (the structured OBS update of SlimGPT and ZipLM). Nothing removed: W_K' = W.
- ls+bias: the same solve with a constant input appended (an intercept), so the bias absorbs
  the removed units' mean and the kept columns their fluctuation."""
from __future__ import annotations

import torch

from cusprun.errors import SpecError


# Float32 solves are about a third faster; with a relative ridge of at least this much the system
# is well enough conditioned (<= 1 + width / ridge) for float32 to agree with float64 to about 1e-5
# on real Grams (SmolLM2, ridge 0.1). Smaller ridges, or a float32 Cholesky that fails, use float64.
FLOAT32_MIN_RIDGE = 0.01


def _solve_spd(a: torch.Tensor, b: torch.Tensor, fast: bool = False) -> torch.Tensor:
    """a^-1 b for symmetric positive (semi-)definite a, adding jitter if Cholesky fails; `fast`
    tries float32 first. Returns float32 when the float32 Cholesky succeeded, else float64."""
    if fast:
        chol, info = torch.linalg.cholesky_ex(a.float())
        if int(info) == 0:
            return torch.cholesky_solve(b.float(), chol)
        del chol
    a, b = a.double(), b.double()
    jitter = 0.0
    scale = float(a.diagonal().abs().mean()) or 1.0
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    for _ in range(6):
        chol, info = torch.linalg.cholesky_ex(a + jitter * eye)
        if int(info) == 0:
            return torch.cholesky_solve(b, chol)
        jitter = scale * 1e-8 if jitter == 0 else jitter * 100
    return torch.linalg.lstsq(a, b).solution


def _ls_from_inputs(w: torch.Tensor, k: torch.Tensor, p: torch.Tensor, x: torch.Tensor,
                    ridge: float) -> torch.Tensor:
    """The 'ls' refit from the calibration inputs x [T, n] themselves (G = x^T x), for T < n:
    W_P H_PK (H_KK + rI)^-1 = W_P x_P^T (x_K x_K^T + rI)^-1 x_K (the push-through identity), a
    T x T solve instead of a |K| x |K| one: for Llama-3-8B's down_proj with 1536 calibration
    tokens about 6x fewer operations, and no width x width matrix at all."""
    x = x.to(w.device, torch.float32)
    xk, xp = x.index_select(1, k), x.index_select(1, p)
    r = ridge * float(xk.pow(2).sum(0).mean())          # ridge relative to mean diag(H_KK)
    a = (xk @ xk.t()).double()
    a.diagonal().add_(r)
    m = (w.index_select(1, p).float() @ xp.t()).double()   # [out, T]
    z = _solve_spd(a, m.t()).t()                            # [out, T] = m a^-1 (a symmetric)
    return w.index_select(1, k) + (z.float() @ xk).double()


def compensate(weight: torch.Tensor, bias: torch.Tensor | None, keep: list[int] | torch.Tensor,
               gram: torch.Tensor | None, total: torch.Tensor, n_tokens: float, *, mode: str,
               ridge: float = 0.01, factor: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(kept columns of the compensated weight [out, |K|], new bias or the given one), float64.

    `gram` [n, n] and `total` [n] are sums over n_tokens calibration tokens of the projection's
    input (gram may be None for mode 'bias'). `factor` [T, n], when given, is the inputs whose
    Gram `gram` is (gram may then be None): mode 'ls' solves from it (_ls_from_inputs). The
    bias is None only when mode adds none and the projection had none."""
    if mode not in ("none", "bias", "ls", "ls+bias"):
        raise SpecError(f"compensation mode {mode!r}; accepted: 'none', 'bias', 'ls', 'ls+bias'.")
    w = weight.detach().double()
    n = w.shape[1]
    k = torch.as_tensor(keep, dtype=torch.long, device=w.device)
    kept = torch.zeros(n, dtype=torch.bool, device=w.device)
    kept[k] = True
    p = torch.nonzero(~kept).flatten()
    b = bias.detach().double() if bias is not None else None
    if mode == "none" or len(p) == 0:
        if mode in ("bias", "ls+bias") and b is None:
            b = torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
        return w[:, k], b
    mean = total.to(w.device).double() / (n_tokens if n_tokens > 0 else 1)
    if mode == "bias":
        b = (b if b is not None else 0) + w[:, p] @ mean[p]
        return w[:, k], b
    if mode == "ls" and factor is not None and factor.shape[0] < len(k):
        return _ls_from_inputs(w, k, p, factor, ridge), b
    if gram is None and factor is not None:
        gram = factor.float().t() @ factor.float()
    if gram is None:
        raise SpecError(f"compensation mode {mode!r} needs the Gram matrix of the layer inputs.")
    fast = ridge >= FLOAT32_MIN_RIDGE
    h = gram.to(w.device) if fast else gram.to(w.device).double()
    wk, wp = w[:, k], w[:, p]
    if mode == "ls+bias":        # append the constant input 1: Gram entries s and N
        s, h = total.to(w.device).double(), h.double()
        h_kk = torch.cat([torch.cat([h[k][:, k], s[k, None]], 1),
                          torch.cat([s[None, k], torch.tensor([[float(n_tokens)]], dtype=h.dtype,
                                                               device=h.device)], 1)])
        h_kp = torch.cat([h[k][:, p], s[None, p]])
        wk = torch.cat([wk, (b if b is not None else torch.zeros_like(w[:, 0]))[:, None]], 1)
    else:     # the submatrices at the solve's precision, indexed without a [K, n] float64 copy
        g = h.float() if fast else h
        rows = g.index_select(0, k)
        h_kk, h_kp = rows.index_select(1, k), rows.index_select(1, p)
        del rows, g
    r = ridge * float(h_kk.diagonal().mean())
    h_kk.diagonal().add_(r)
    sol = _solve_spd(h_kk, h_kp, fast=fast)
    new = wk + (wp.to(sol.dtype) @ sol.t()).double()   # float32 with the float32 solve
    if mode == "ls+bias":
        return new[:, :-1], new[:, -1]
    return new, b
