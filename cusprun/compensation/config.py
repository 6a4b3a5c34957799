"""CompensationConfig: how kept weights are corrected, in closed form, for what was removed."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field

from cusprun.errors import SpecError
from cusprun.config_base import SpecModel

Mode = Literal["none", "bias", "ls", "ls+bias"]
MODES: tuple[str, ...] = ("none", "bias", "ls", "ls+bias")


class CompensationConfig(SpecModel):
    """'bias' adds the mean contribution of removed FFN neurons / heads to the output bias of
    down_proj / o_proj (FLAP). 'ls' refits the kept columns of down_proj / o_proj by ridge least
    squares so that they reconstruct the dense layer output on calibration tokens (the structured
    OBS update of SlimGPT / ZipLM, one shot from the dense model's input Gram matrices).
    'ls+bias' does both in one solve (an intercept column). Biases need a family whose config
    can carry them (Llama: mlp_bias / attention_bias; Qwen3, Gemma3: attention_bias)."""

    spec_name: ClassVar[str] = "compensation config"
    allowed: ClassVar[dict[str, str]] = {"mode": "'none', 'bias', 'ls' or 'ls+bias'",
                                         "ridge": "a relative ridge term in [0, 10]"}
    model_config = ConfigDict(extra="forbid")
    mode: Mode = Field("ls", description="'none', 'bias' (FLAP), 'ls' (least-squares refit of kept "
                                         "columns) or 'ls+bias'")
    ridge: float = Field(0.1, ge=0, le=10, description=(
        "Ridge term of the least-squares refit, relative to the mean diagonal of the kept units' "
        "Gram matrix (keeps the solve stable when kept inputs are nearly collinear)"))

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def adds_bias(self) -> bool:
        return self.mode in ("bias", "ls+bias")


def check_bias_support(adapter, config: CompensationConfig) -> None:
    """Bias compensation needs a stock config key that gives down_proj and o_proj a bias
    (`adapter`: a cusprun.adapters.Adapter)."""
    if config.adds_bias and not (adapter.spec.down_bias_key and adapter.spec.o_bias_key):
        raise SpecError(
            f"compensation mode {config.mode!r} adds output biases, which {adapter.spec.family} "
            f"({adapter.architecture}) cannot carry in its stock config; use mode 'ls' or 'none'.")
