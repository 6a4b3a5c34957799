"""Log-probabilities of chosen next tokens from final hidden states, the LM head in chunks.

Only scored positions reach the head, and the head runs over the vocabulary in row chunks with a
running log-sum-exp, so neither [positions x vocabulary] logits (262k columns for Gemma 3) nor,
for a streamed model, the whole head matrix is ever in memory. Every variant's positions share
each chunk, so a streamed head is read once per pass.

The head always multiplies in float32, whatever the weights' dtype or the pass's autocast: its
logits feed a log-softmax over the whole vocabulary, and a bf16 logit of 20 is rounded by up to
0.06, more than the loss differences the report compares. A bf16 head is upcast one chunk at a
time, the copy held to the same budget as the logits."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cusprun.engine.batches import Batch
from cusprun.engine.model import LayeredModel
from cusprun.engine.run import Variant, run_pass

LOGITS_BUDGET = 256 << 20   # bytes of float32 logits per tile on an accelerator
CPU_LOGITS_BUDGET = 2 << 20
"""On a CPU a tile whose logits stay in cache is faster than a big one: the matmul writes them,
then max, exp and sum read them again (measured: benchmarks/bench_lm_head.py)."""
POSITION_BLOCK = 512        # positions per tile on a CPU


def default_budget(device: torch.device | str) -> int:
    return LOGITS_BUDGET if torch.device(device).type != "cpu" else CPU_LOGITS_BUDGET


def head_tiles(n_positions: int, vocab: int, budget: int, device: torch.device | str = "cpu",
               block: int | None = None, width: int | None = None) -> tuple[int, int]:
    """(vocabulary rows per chunk, positions per block) so one tile of logits is about `budget`
    bytes. A chunk of the head is read once and serves every position block. `block`: positions
    per tile (default: POSITION_BLOCK on a CPU, all of them elsewhere); `width`: the hidden size
    when each chunk is copied to float32 (a bf16 head), the copy then held to `budget` too."""
    if block is None:
        on_cpu = torch.device(device).type == "cpu"
        block = min(n_positions, POSITION_BLOCK) if on_cpu else n_positions
    block = max(min(block, n_positions), 1)
    rows = budget // (4 * block)
    if width is not None:
        rows = min(rows, budget // (4 * width))
    return max(1, min(vocab, rows)), block


@torch.no_grad()
def token_logprobs(lm: LayeredModel, hidden: Mapping[str, torch.Tensor],
                   targets: Mapping[str, torch.Tensor], *, budget: int | None = None,
                   block: int | None = None, rows: Mapping[str, torch.Tensor] | None = None
                   ) -> dict[str, torch.Tensor]:
    """name -> log p(targets[name][k] | hidden[name][rows[name][k]]) (float32, on CPU) for
    final-normed hidden states [N, hidden] of one or more variants. `rows` (default: k itself)
    lets several targets share one hidden state: its row of the head and its log-sum-exp are
    computed once. The head runs in float32 (module docstring). `budget`: bytes of float32
    logits per tile (default: by device); `block`: positions per tile (head_tiles)."""
    names = [n for n in hidden if hidden[n].shape[0]]
    out = {n: torch.zeros(0) for n in hidden if n not in names}
    if not names:
        return out
    vocab = lm.config.vocab_size
    budget = default_budget(lm.device) if budget is None else budget
    upcast = None if lm.dtype == torch.float32 else lm.dims.hidden
    step, block = head_tiles(max(hidden[n].shape[0] for n in names), vocab, budget, lm.device,
                             block, upcast)
    hs = {n: hidden[n].to(lm.device, torch.float32) for n in names}
    lse = {n: torch.full((hs[n].shape[0],), -torch.inf, device=lm.device) for n in names}
    tg = {n: targets[n].to(lm.device) for n in names}
    at = {n: (rows[n] if rows is not None else torch.arange(len(targets[n]))).to(lm.device)
          for n in names}
    picked = {n: torch.zeros(len(tg[n]), device=lm.device) for n in names}
    for start in range(0, vocab, step):
        stop = min(vocab, start + step)
        with lm.head(start, stop) as head, torch.autocast(lm.device.type, enabled=False):
            weight = head.weight.float()
            bias = None if head.bias is None else head.bias.float()
            for n in names:
                inside = ((tg[n] >= start) & (tg[n] < stop)).nonzero().flatten()
                r = at[n][inside]           # their rows among the positions
                for p in range(0, hs[n].shape[0], block):
                    logits = F.linear(hs[n][p:p + block], weight, bias)
                    if head.softcap:
                        logits = torch.tanh(logits / head.softcap) * head.softcap
                    lse[n][p:p + block] = torch.logaddexp(lse[n][p:p + block],
                                                          torch.logsumexp(logits, dim=-1))
                    here = (r >= p) & (r < p + block)
                    if here.any():
                        k = inside[here]
                        picked[n][k] = logits[r[here] - p, tg[n][k] - start]
                    del logits
    out.update({n: (picked[n] - lse[n][at[n]]).cpu() for n in names})
    return out


@dataclass
class Picks:
    """The scored positions of one batch: hidden states at [rows, cols] predict `targets`."""

    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor


def pick_logprobs(lm: LayeredModel, batches: Sequence[Batch], picks: Sequence[Picks],
                  variants: Sequence[Variant] = (Variant(),), *, precision: str = "float32",
                  desc: str = "scoring", progress: bool = True) -> dict[str, torch.Tensor]:
    """variant -> log-prob of every pick, batch after batch in order (float32, CPU): one pass
    (its layers at `precision`), then the final norm and the float32 head on the picked
    positions only, each position once (the options of a packed multiple-choice item all start
    after the same question token)."""
    hidden: dict[str, list[torch.Tensor]] = {v.name: [] for v in variants}
    where, offset = [], 0         # per batch: its unique positions, the picks' rows among them
    for p in picks:
        width = int(p.cols.max()) + 1 if len(p.cols) else 1
        uniq, inverse = torch.unique(p.rows.long() * width + p.cols.long(), return_inverse=True)
        where.append((uniq // width, uniq % width, inverse + offset))
        offset += len(uniq)

    def on_final(name: str, i: int, _b: Batch, h: torch.Tensor) -> None:
        r, c, _ = where[i]
        hidden[name].append(lm.norm(h[r.to(h.device), c.to(h.device)]))

    run_pass(lm, batches, variants, precision=precision, on_final=on_final, desc=desc,
             progress=progress)
    targets = torch.cat([p.targets for p in picks]) if picks else torch.zeros(0, dtype=torch.long)
    rows = torch.cat([w[2] for w in where]) if where else torch.zeros(0, dtype=torch.long)
    width = lm.dims.hidden
    joined = {n: torch.cat(hs) if hs else torch.zeros((0, width)) for n, hs in hidden.items()}
    return token_logprobs(lm, joined, {n: targets for n in joined},
                          rows={n: rows for n in joined})
