"""DamageProbe: the real cost of a candidate plan, measured as the held-back loss of the dense
model with the plan's units removed (and compensated, as slicing will), one pass per candidate
through cusprun.engine: each layer is pruned while the pass runs through it and restored after,
so the model is never reloaded and may be streamed from disk."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence

from torch import nn

from cusprun.compensation import CompensationConfig, GramSet
from cusprun.engine import LayeredModel, Variant, plan_edit
from cusprun.errors import CorpusError
from cusprun.evaluation.items import LossExample
from cusprun.evaluation.likelihood import as_layered, encode_loss_set, score_sequences
from cusprun.models.loading import pad_id_of
from cusprun.models.precision import compute_precision, matmul_dtype, resolve_precision

log = logging.getLogger(__name__)

# Dense held-back losses by `dense_key`, shared by probes in one process: a build measures the
# same dense model on the same documents once per ratio, concurrently; the first computes.
_DENSE: dict[str, tuple[dict, dict]] = {}
_DENSE_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()
_DENSE_KEEP = 8

PerDoc = dict[str, list[tuple[float, int]]]


class DamageProbe:
    """Held-back loss per dimension of a model under candidate plans.

    `heldback`: dimension -> documents held back from the statistics (never used to score
    units). Damage of a plan = mean over dimensions of (masked loss / dense loss), so every
    dimension counts the same whatever its dense loss."""

    def __init__(self, model: nn.Module | LayeredModel, tokenizer,
                 heldback: Mapping[str, Sequence[str]], *, grams: GramSet | None = None,
                 compensation: CompensationConfig | None = None, max_tokens: int = 128,
                 batch_size: int = 8, dense_key: str | None = None, precision: str = "float32"):
        if not heldback or any(not docs for docs in heldback.values()):
            raise CorpusError("The allocation search needs held-back documents for every dimension "
                              f"(got {', '.join(f'{k}: {len(v)}' for k, v in heldback.items()) or 'none'}).")
        self.lm = as_layered(model)
        self.compensation = compensation or CompensationConfig(mode="none")
        self.grams = grams
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self.device = self.lm.device
        self._autocast = resolve_precision(precision, self.device)   # forwards only
        self.precision = matmul_dtype(precision, self.device, self.lm.dtype)   # what they run in
        self.encoded = {k: encode_loss_set(tokenizer, [LossExample(text=t) for t in docs],
                                           max_tokens=max_tokens, name=f"held-back {k}")
                        for k, docs in heldback.items()}
        self.pad_id = pad_id_of(tokenizer)
        self.n_evaluated = 0
        self.seconds = 0.0
        self.per_doc: PerDoc = {}   # of the last measurement
        self.dense, self.dense_per_doc = self._dense(dense_key)
        self.per_doc = self.dense_per_doc

    @property
    def model(self) -> nn.Module:
        return self.lm.model

    def _dense(self, key: str | None) -> tuple[dict, PerDoc]:
        """The dense model's held-back losses; with `key` (naming the dense weights, documents
        and max_tokens), computed once per process and shared."""
        if key is None:
            return self._measure(None)
        with _GUARD:
            lock = _DENSE_LOCKS.setdefault(key, threading.Lock())
        with lock:
            if key not in _DENSE:
                _DENSE[key] = self._measure(None)
                while len(_DENSE) > _DENSE_KEEP:
                    old = next(iter(_DENSE))
                    _DENSE.pop(old)
                    _DENSE_LOCKS.pop(old, None)
            else:
                log.info("dense held-back losses: reused (%s)", key)
            return _DENSE[key]

    def _measure(self, plan) -> tuple[dict[str, float], PerDoc]:
        t0 = time.perf_counter()
        edit = None if plan is None else plan_edit(self.lm.adapter, self.lm.dims, plan,
                                                   grams=self.grams, config=self.compensation)
        seqs = [e for enc in self.encoded.values() for e in enc]
        with compute_precision(self.device, self._autocast):
            scored = score_sequences(self.lm, seqs, batch_size=self.batch_size, pad_id=self.pad_id,
                                     progress=False, variants=[Variant("probe", edit)])["probe"]
        losses, per_doc, start = {}, {}, 0
        for k, enc in self.encoded.items():
            part = scored[start:start + len(enc)]
            start += len(enc)
            per_doc[k] = [(-lp, n) for lp, n in part]
            losses[k] = sum(nll for nll, _ in per_doc[k]) / max(sum(n for _, n in per_doc[k]), 1)
        self.per_doc = per_doc
        self.n_evaluated += 1
        self.seconds += time.perf_counter() - t0
        return losses, per_doc

    def losses(self, plan) -> dict[str, float]:
        """Held-back loss per dimension with `plan` (anything with .layers) removed."""
        return self._measure(plan)[0]

    def damage(self, losses: Mapping[str, float]) -> float:
        return sum(losses[k] / self.dense[k] for k in self.dense) / len(self.dense)

    def difference(self, a: PerDoc, b: PerDoc) -> tuple[float, float]:
        """Damage of a minus damage of b, measured on the same documents, and its standard
        error from the per-document paired differences (a ratio estimator per dimension)."""
        diff = var = 0.0
        for k, dense in self.dense.items():
            d = [(na - nb, n) for (na, n), (nb, _) in zip(a[k], b[k])]
            tokens = sum(n for _, n in d) or 1
            mean = sum(x for x, _ in d) / tokens
            m = len(d)
            resid = sum((x - mean * n) ** 2 for x, n in d) * (m / (m - 1) if m > 1 else 1.0)
            diff += mean / dense
            var += resid / tokens ** 2 / dense ** 2
        k = len(self.dense)
        return diff / k, var ** 0.5 / k

    @property
    def n_tokens(self) -> int:
        return sum(len(e.ids) for enc in self.encoded.values() for e in enc)
