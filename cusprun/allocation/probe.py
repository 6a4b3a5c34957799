"""DamageProbe: the real cost of a candidate plan, measured as the held-back loss of the dense
model with the plan's units masked (and compensated, as slicing will), restored between
candidates (cusprun.compensation.apply.MaskSession) instead of reloaded."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence

from torch import nn

from cusprun.compensation import CompensationConfig, GramSet
from cusprun.compensation.apply import MaskSession
from cusprun.errors import CorpusError

log = logging.getLogger(__name__)

# Dense held-back losses by `dense_key`, shared by probes in one process: a build measures the
# same dense model on the same documents once per ratio, concurrently; the first computes.
_DENSE: dict[str, tuple[dict, dict]] = {}
_DENSE_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()
_DENSE_KEEP = 8


class DamageProbe:
    """Held-back loss per dimension of `model` under candidate plans.

    `heldback`: dimension -> documents held back from the statistics (never used to score
    units). Damage of a plan = mean over dimensions of (masked loss / dense loss), so every
    dimension counts the same whatever its dense loss."""

    def __init__(self, model: nn.Module, tokenizer, heldback: Mapping[str, Sequence[str]], *,
                 grams: GramSet | None = None, compensation: CompensationConfig | None = None,
                 max_tokens: int = 128, batch_size: int = 8, dense_key: str | None = None,
                 precision: str = "float32"):
        from cusprun.evaluation.items import LossExample
        from cusprun.models.loading import input_device
        from cusprun.models.precision import resolve_precision

        if not heldback or any(not docs for docs in heldback.values()):
            raise CorpusError("The allocation search needs held-back documents for every dimension "
                              f"(got {', '.join(f'{k}: {len(v)}' for k, v in heldback.items()) or 'none'}).")
        self.model, self.tokenizer = model, tokenizer
        self.compensation = compensation or CompensationConfig(mode="none")
        self.grams = grams
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self.device = input_device(model)
        self.precision = resolve_precision(precision, self.device)   # forwards only; weights stay
        self.sets = {k: [LossExample(text=t) for t in docs] for k, docs in heldback.items()}
        self.session = MaskSession(model)
        self.n_evaluated = 0
        self.seconds = 0.0
        self.per_doc: dict[str, list[tuple[float, int]]] = {}   # of the last measurement
        self.dense, self.dense_per_doc = self._dense(dense_key)
        self.per_doc = self.dense_per_doc

    def _dense(self, key: str | None) -> tuple[dict, dict]:
        """The dense model's held-back losses; with `key` (naming the dense weights, documents
        and max_tokens), computed once per process and shared."""
        if key is None:
            return self._losses(), self.per_doc
        with _GUARD:
            lock = _DENSE_LOCKS.setdefault(key, threading.Lock())
        with lock:
            if key not in _DENSE:
                _DENSE[key] = (self._losses(), self.per_doc)
                while len(_DENSE) > _DENSE_KEEP:
                    old = next(iter(_DENSE))
                    _DENSE.pop(old)
                    _DENSE_LOCKS.pop(old, None)
            else:
                log.info("dense held-back losses: reused (%s)", key)
            return _DENSE[key]

    def restore(self) -> None:
        self.session.restore()

    def _losses(self) -> dict[str, float]:
        from cusprun.evaluation.likelihood import heldout_loss
        from cusprun.models.precision import compute_precision

        t0 = time.perf_counter()
        with compute_precision(self.device, self.precision):
            res = {k: heldout_loss(self.model, self.tokenizer, ex, max_tokens=self.max_tokens,
                                   batch_size=self.batch_size, name=f"held-back {k}", progress=False)
                   for k, ex in self.sets.items()}
        out = {k: r.loss for k, r in res.items()}
        self.per_doc = {k: r.per_doc for k, r in res.items()}
        self.n_evaluated += 1
        self.seconds += time.perf_counter() - t0
        return out

    def losses(self, plan) -> dict[str, float]:
        """Held-back loss per dimension with `plan` (anything with .layers) masked."""
        t0 = time.perf_counter()
        try:
            self.session.apply(plan, grams=self.grams, config=self.compensation)
            self.seconds += time.perf_counter() - t0
            return self._losses()
        finally:
            self.restore()

    def damage(self, losses: Mapping[str, float]) -> float:
        return sum(losses[k] / self.dense[k] for k in self.dense) / len(self.dense)

    def difference(self, a: Mapping[str, list[tuple[float, int]]],
                   b: Mapping[str, list[tuple[float, int]]]) -> tuple[float, float]:
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
        return sum(len(self.tokenizer(e.text, truncation=True, max_length=self.max_tokens)["input_ids"])
                   for ex in self.sets.values() for e in ex)
