"""LayeredModel: a causal LM that passes run one decoder layer at a time.

Its weights are either resident (an ordinary loaded model) or streamed: the model is built on
the meta device and each decoder layer's weights are read from the safetensors checkpoint when
the pass reaches it and dropped after, so memory holds one layer, not the model (as SparseGPT and
GPTQ process a model). The embedding is read for the capture and dropped; the LM head is read in
vocabulary chunks when scoring.

What a layer receives besides its hidden states (attention masks, rotary embeddings; Gemma 3
gives sliding-window and global layers different ones) is captured by running the family's own
decoder forward once per batch with every layer replaced by a pass-through: the masks and
position embeddings are built by transformers itself, so nothing here knows a family."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cusprun.adapters import Adapter
from cusprun.engine.batches import Batch
from cusprun.errors import CusprunError
from cusprun.models.checkpoint import Checkpoint

log = logging.getLogger(__name__)


def _set_param(root: nn.Module, dotted: str, value: torch.Tensor) -> None:
    owner, _, leaf = dotted.rpartition(".")
    mod = root.get_submodule(owner) if owner else root
    mod._parameters[leaf] = nn.Parameter(value, requires_grad=False)


def _pass_through(record: Callable[[tuple, dict], None]):
    def forward(*args, **kwargs):
        record(args, kwargs)
        return args[0] if args else kwargs["hidden_states"]
    return forward


_NONE = object()


@contextmanager
def _passing_through(layers: Sequence[nn.Module], record: Callable[[tuple, dict], None]
                     ) -> Iterator[None]:
    """Every layer a pass-through for the block. The instance `forward` a layer had before is
    put back as it was: accelerate's hooks (device_map, offload) live in that attribute."""
    saved = [layer.__dict__.get("forward", _NONE) for layer in layers]
    try:
        for layer in layers:
            layer.forward = _pass_through(record)
        yield
    finally:
        for layer, forward in zip(layers, saved):
            if forward is _NONE:
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = forward


@dataclass
class Head:
    """The output projection, possibly a row range of the vocabulary (see LayeredModel.head)."""

    weight: torch.Tensor          # [vocab rows, hidden]
    bias: torch.Tensor | None
    softcap: float | None


class LayeredModel:
    """One model for layer-by-layer passes (see module docstring). Build with `resident(model)`
    or `streamed(path)`; cusprun.engine.placement.open_model picks one from free memory."""

    def __init__(self, model: nn.Module, *, checkpoint: Checkpoint | None, device: torch.device,
                 dtype: torch.dtype):
        self.model = model
        self.config = model.config
        self.adapter = Adapter.for_model(model)
        self.dims = self.adapter.dims(model.config)
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.dtype = dtype
        self.layers = self.adapter.layers(model)
        self.decoder = model.get_decoder()
        self.softcap = getattr(model.config, "final_logit_softcapping", None) or None

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def resident(cls, model: nn.Module) -> "LayeredModel":
        emb = model.get_input_embeddings().weight
        return cls(model, checkpoint=None, device=emb.device, dtype=emb.dtype)

    @classmethod
    def streamed(cls, path: str | Path, *, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, trust_remote_code: bool = False) -> "LayeredModel":
        """The model at `path` with no decoder layer in memory until a pass needs it."""
        from accelerate import init_empty_weights
        from transformers import AutoModelForCausalLM

        from cusprun.models.loading import _LOAD_LOCK, default_device, default_dtype, load_config

        device = torch.device(device or default_device())
        dtype = dtype or default_dtype(device)
        config = load_config(path, trust_remote_code=trust_remote_code)
        ckpt = Checkpoint(path)
        with _LOAD_LOCK, init_empty_weights(include_buffers=False):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype,
                                                     trust_remote_code=trust_remote_code)
        model.eval()
        for mod in model.modules():   # rotary inv_freq, Gemma's embed_scale: real, computed at init
            for name, buf in list(mod._buffers.items()):
                if buf is not None and not buf.is_meta:
                    mod._buffers[name] = buf.to(device)
        lm = cls(model, checkpoint=ckpt, device=device, dtype=dtype)
        lm._check_names()
        for name in lm._outer_params():
            if name != lm._embed_param:        # the embedding is read for each capture
                _set_param(model, name, ckpt.read(name, dtype, device))
        log.info("streaming %s layer by layer (%d layers, %.2f GB on disk, %s on %s)", path,
                 lm.dims.n_layers, ckpt.nbytes() / 1e9, str(dtype).removeprefix("torch."), device)
        return lm

    @property
    def streamed_from(self) -> Path | None:
        return self.checkpoint.path if self.checkpoint is not None else None

    @property
    def bytes_read(self) -> int:
        return self.checkpoint.bytes_read if self.checkpoint is not None else 0

    @property
    def _embed_param(self) -> str:
        return self.adapter.embedding_names()[0]

    def _outer_params(self) -> list[str]:
        """Parameters outside the decoder layers (embedding, final norm, untied head)."""
        prefix = self.adapter.spec.layers + "."
        return [n for n, _ in self.model.named_parameters() if not n.startswith(prefix)
                and n != self.adapter.embedding_names()[1]]

    def _head_name(self) -> str:
        embed, head = self.adapter.embedding_names()
        return head if head in self.checkpoint else embed   # tied: the embedding is the head

    def _check_names(self) -> None:
        """Refuse a checkpoint whose tensor names do not match the model before any pass."""
        prefix = f"{self.adapter.spec.layers}.0."
        want = self._outer_params() + [prefix + n for n, _ in self.layers[0].named_parameters()]
        missing = [n for n in want if n not in self.checkpoint]
        if missing:
            raise CusprunError(
                f"Checkpoint {self.checkpoint.path} lacks {len(missing)} tensor(s) the "
                f"{self.adapter.architecture} config implies, e.g. {missing[:3]}")

    # ---- passes ---------------------------------------------------------------------
    @contextmanager
    def _embedding(self) -> Iterator[None]:
        if self.checkpoint is None:
            yield
            return
        emb = self.model.get_input_embeddings()
        meta = emb._parameters["weight"]      # tied heads keep pointing at this Parameter
        _set_param(self.model, self._embed_param,
                   self.checkpoint.read(self._embed_param, self.dtype, self.device))
        try:
            yield
        finally:
            emb._parameters["weight"] = meta

    @torch.no_grad()
    def capture(self, batches: Sequence[Batch]) -> list[torch.Tensor]:
        """Hidden states entering layer 0 for each batch; fills each batch's per-layer keyword
        arguments. Costs the embedding lookup and mask construction, not a forward pass."""
        out = []
        with self._embedding():
            for b in batches:
                kwargs: list[dict] = []
                first: list[torch.Tensor] = []

                def record(args, kw, kwargs=kwargs, first=first):
                    if not first:
                        first.append(args[0] if args else kw["hidden_states"])
                    kwargs.append({k: v for k, v in kw.items()
                                   if k not in ("hidden_states", "cache", "past_key_values",
                                                "use_cache")})

                with _passing_through(self.layers, record):
                    self.decoder(input_ids=b.ids.to(self.device),
                                 **{k: v.to(self.device) for k, v in b.call.items()},
                                 use_cache=False)
                if len(kwargs) != len(self.layers):
                    raise CusprunError(f"captured {len(kwargs)} of {len(self.layers)} decoder layers")
                b.kwargs = kwargs
                out.append(first[0])
        return out

    @contextmanager
    def layer(self, li: int) -> Iterator[nn.Module]:
        """Decoder layer `li` with real weights for the duration of the block."""
        layer = self.layers[li]
        if self.checkpoint is None:
            yield layer
            return
        prefix = f"{self.adapter.spec.layers}.{li}."
        names = [n for n, _ in layer.named_parameters()]
        for n in names:
            _set_param(layer, n, self.checkpoint.read(prefix + n, self.dtype, self.device))
        try:
            yield layer
        finally:
            for n in names:
                p = layer.get_parameter(n)
                _set_param(layer, n, torch.empty(p.shape, dtype=p.dtype, device="meta"))

    def norm(self, hidden: torch.Tensor) -> torch.Tensor:
        """The decoder's final norm."""
        return self.decoder.norm(hidden)

    @contextmanager
    def head(self, start: int = 0, stop: int | None = None) -> Iterator[Head]:
        """Rows start:stop of the output projection (all by default): a view for a resident
        model, read from the checkpoint for a streamed one."""
        lin = self.model.get_output_embeddings()
        stop = self.config.vocab_size if stop is None else stop
        bias = getattr(lin, "bias", None)
        if self.checkpoint is None:
            yield Head(lin.weight[start:stop], None if bias is None else bias[start:stop],
                       self.softcap)
            return
        name = self._head_name()
        w = self.checkpoint.read_rows(name, start, stop, self.dtype, self.device)
        b = None
        if bias is not None:
            b = self.checkpoint.read(self.adapter.embedding_names()[1].removesuffix(".weight")
                                     + ".bias", self.dtype, self.device)[start:stop]
        yield Head(w, b, self.softcap)
