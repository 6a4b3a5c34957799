"""CompensationConfig: how kept weights are corrected, in closed form, for what was removed."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cusprun.masks.config import spec_error_from

Mode = Literal["none", "bias", "ls", "ls+bias"]
MODES: tuple[str, ...] = ("none", "bias", "ls", "ls+bias")


class CompensationConfig(BaseModel):
    """'bias' adds the mean contribution of removed FFN neurons / heads to the output bias of
    down_proj / o_proj (FLAP). 'ls' refits the kept columns of down_proj / o_proj by ridge least
    squares so that they reconstruct the dense layer output on calibration tokens (the structured
    OBS update of SlimGPT / ZipLM, one shot from the dense model's input Gram matrices).
    'ls+bias' does both in one solve (an intercept column). Biases need a family whose config
    can carry them (Llama: mlp_bias / attention_bias; Qwen3, Gemma3: attention_bias)."""

    model_config = ConfigDict(extra="forbid")
    mode: Mode = Field("ls", description="'none', 'bias' (FLAP), 'ls' (least-squares refit of kept "
                                         "columns) or 'ls+bias'")
    ridge: float = Field(0.01, ge=0, le=10, description=(
        "Ridge term of the least-squares refit, relative to the mean diagonal of the kept units' "
        "Gram matrix (keeps the solve stable when kept inputs are nearly collinear)"))

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def adds_bias(self) -> bool:
        return self.mode in ("bias", "ls+bias")

    @model_validator(mode="wrap")
    @classmethod
    def _as_spec_error(cls, data, handler):
        try:
            return handler(data)
        except ValidationError as e:
            raise spec_error_from(e, "compensation config") from e
