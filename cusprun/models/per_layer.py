"""Per-layer widths for any supported family, loadable with AutoModelForCausalLM after
`import cusprun.slicing` (no remote code; `cusprun.load_expert` imports it).

config.json of a per-layer expert is the dense base config (all its keys, dense widths at top
level) with `model_type: "cusprun_per_layer"`, plus `base_model_type`, `base_architecture` and
`layer_widths` (one {intermediate_size, num_attention_heads, num_key_value_heads} per layer).

Loading builds, per base family, a config class that IS the family config class (so all of its
defaults, validation and derived values keep working) and a model class that IS the family
CausalLM class, whose attention and MLP modules are rebuilt per layer from a view of the
config carrying that layer's widths. Forward, KV cache and generate() are the family's own.
"""
from __future__ import annotations

import inspect
import warnings
from typing import Any

import transformers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from cusprun.adapters import ARCHITECTURES, Adapter
from cusprun.errors import UnsupportedArchitectureError

MODEL_TYPE = "cusprun_per_layer"
_WIDTH_KEYS = ("intermediate_size", "num_attention_heads", "num_key_value_heads")
_CLASSES: dict[str, tuple[type, type]] = {}


class LayerConfigView:
    """The model config as one layer sees it: that layer's widths, everything else read live
    from the model config (so later changes such as set_attn_implementation reach the layer)."""

    def __init__(self, config: Any, widths: dict[str, int]):
        self.__dict__["_config"] = config
        self.__dict__["_widths"] = {k: int(widths[k]) for k in _WIDTH_KEYS}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_config", "_widths"):
            raise AttributeError(name)
        widths = self.__dict__["_widths"]
        if name in widths:
            return widths[name]
        return getattr(self.__dict__["_config"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__["_widths"]:
            self.__dict__["_widths"][name] = value
        else:
            setattr(self.__dict__["_config"], name, value)

    def __repr__(self) -> str:
        return f"LayerConfigView({self.__dict__['_widths']})"


class CusprunPerLayerConfig(PreTrainedConfig):
    """Registered for model_type 'cusprun_per_layer'. Instantiating it with a `base_model_type`
    returns an instance of the matching family subclass (see module docstring)."""

    model_type = MODEL_TYPE
    base_model_type: str | None = None
    base_architecture: str | None = None
    layer_widths: list[dict] | None = None

    def __new__(cls, *args: Any, **kwargs: Any):
        if cls is CusprunPerLayerConfig and kwargs.get("base_model_type"):
            cls = per_layer_classes(kwargs["base_model_type"])[0]
        return super().__new__(cls)


class _PerLayerModelMixin:
    """Rebuilds each decoder layer's attention and MLP with that layer's widths, just before the
    family's post_init() finalises the model."""

    def post_init(self) -> None:  # type: ignore[override]
        widths = getattr(self.config, "layer_widths", None)
        if widths:
            _rebuild_layers(self, widths)
        super().post_init()  # type: ignore[misc]


def _construct(module_cls: type, config: Any, layer_idx: int):
    """module_cls(config[, layer_idx]). A decorator may hide the real signature behind
    (*args, **kwargs) (transformers >= 5.25 wraps attention classes with the `kernels` hub's
    new_init), so an opaque signature gets layer_idx, and loses it only if refused."""
    params = inspect.signature(module_cls.__init__).parameters
    if "layer_idx" in params:
        return module_cls(config, layer_idx=layer_idx)
    kinds = {p.kind for p in params.values()}
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        return module_cls(config)
    try:
        return module_cls(config, layer_idx=layer_idx)
    except TypeError as e:
        if "layer_idx" not in str(e):
            raise
        return module_cls(config)


def _rebuild_layers(model, widths: list[dict]) -> None:
    adapter = Adapter(model.config.base_architecture)
    layers = adapter.layers(model)
    if len(layers) != len(widths):
        raise ValueError(f"config has {len(widths)} layer_widths for {len(layers)} decoder layers")
    for i, (layer, w) in enumerate(zip(layers, widths)):
        view = LayerConfigView(model.config, w)
        for attr in (adapter.spec.attention, adapter.spec.mlp):
            old = getattr(layer, attr)
            with warnings.catch_warnings():  # a layer may keep no FFN neuron: empty Linear is fine
                warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
                setattr(layer, attr, _construct(type(old), view, i))


def _arch_for_model_type(model_type: str) -> str:
    for arch, spec in ARCHITECTURES.items():
        if model_type in spec.model_types:
            return arch
    raise UnsupportedArchitectureError(
        f"Per-layer expert has base_model_type {model_type!r}; supported: "
        f"{', '.join(sorted(t for s in ARCHITECTURES.values() for t in s.model_types))}")


def per_layer_classes(base_model_type: str) -> tuple[type, type]:
    """(config class, model class) of per-layer experts of one family, created and registered
    with AutoModelForCausalLM on first use."""
    if base_model_type in _CLASSES:
        return _CLASSES[base_model_type]
    arch = _arch_for_model_type(base_model_type)
    base_cfg, base_model = CONFIG_MAPPING[base_model_type], getattr(transformers, arch)
    cfg_cls = type(f"CusprunPerLayer{base_cfg.__name__}", (CusprunPerLayerConfig, base_cfg),
                   {"__module__": __name__, "model_type": MODEL_TYPE})
    model_cls = type(f"CusprunPerLayer{arch}", (_PerLayerModelMixin, base_model),
                     {"__module__": __name__, "config_class": cfg_cls})
    for c in (cfg_cls, model_cls):  # importable by name, so pickling works too
        c.__qualname__ = c.__name__
        globals()[c.__name__] = c
    AutoModelForCausalLM.register(cfg_cls, model_cls, exist_ok=True)
    _CLASSES[base_model_type] = (cfg_cls, model_cls)
    return cfg_cls, model_cls


def per_layer_config_dict(base_config: dict, architecture: str, widths: list[dict]) -> dict:
    """config.json content of a per-layer expert, from the dense config.json content."""
    cfg = dict(base_config)
    cfg["base_model_type"] = cfg["model_type"]
    cfg["base_architecture"] = architecture
    cfg["model_type"] = MODEL_TYPE
    cfg["architectures"] = [f"CusprunPerLayer{architecture}"]
    cfg["layer_widths"] = [{k: int(w[k]) for k in _WIDTH_KEYS} for w in widths]
    return cfg


def register() -> None:
    """Make AutoConfig know model_type 'cusprun_per_layer' (idempotent; done on import)."""
    AutoConfig.register(MODEL_TYPE, CusprunPerLayerConfig, exist_ok=True)


register()
