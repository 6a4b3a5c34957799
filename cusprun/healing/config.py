"""HealSpec: the settings of the optional healing stage (knowledge distillation of a sliced
checkpoint from its dense base). Plain pydantic, no torch: the spec, the Prefect UI form and
`cusprun.prune(heal=...)` share it."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Trainable = Literal["layers", "all", "lora"]


class HealSpec(BaseModel):
    """Distil the sliced expert from the dense model on its calibration text plus general text,
    for a token budget; the result is the same stock checkpoint (same tensors and shapes)."""

    model_config = ConfigDict(extra="forbid", title="Healing")
    SPEED_ONLY: ClassVar[tuple[str, ...]] = ()
    """Every setting changes the healed weights: all of them are in the heal key."""

    tokens: int = Field(50_000, ge=256, le=10_000_000_000, description=(
        "Training tokens (batch_size x seq_len per optimizer step; the data repeats when the "
        "corpora hold fewer)"))
    lr: float = Field(1e-4, gt=0, le=1e-2, description=(
        "Peak learning rate of AdamW (linear warm-up, then cosine decay to lr_floor x lr)"))
    warmup: float = Field(0.05, ge=0, lt=1, description="Fraction of the steps spent warming up")
    lr_floor: float = Field(0.1, ge=0, le=1, description="Final learning rate as a fraction of lr")
    weight_decay: float = Field(0.0, ge=0, le=1)
    kl_weight: float = Field(1.0, ge=0, le=100, description=(
        "Weight of the KL divergence from the dense model's next-token distribution "
        "(scaled by temperature^2, as in Hinton et al.)"))
    lm_weight: float = Field(0.0, ge=0, le=100, description=(
        "Weight of the plain next-token (language-model) loss on the same text"))
    temperature: float = Field(1.0, gt=0, le=20, description=(
        "Softmax temperature of teacher and student in the KL term (>1 also teaches the "
        "teacher's ranking of unlikely tokens)"))
    top_k: int = Field(64, ge=1, le=1_000_000, description=(
        "Teacher tokens kept per position in the precomputed teacher cache; the rest of its "
        "probability mass is one bucket of the KL, so the KL is exact on the coarsened "
        "distribution. Memory of the cache: tokens x top_k x 8 bytes"))
    batch_size: int = Field(4, ge=1, le=4096, description="Sequences per optimizer step")
    micro_batch: int | None = Field(None, ge=1, le=4096, description=(
        "Sequences per forward/backward (gradient accumulation up to batch_size; unset: "
        "batch_size)"))
    seq_len: int = Field(256, ge=16, le=32768, description="Tokens per packed training sequence")
    train: Trainable = Field("layers", description=(
        "What trains: 'layers' every parameter of the decoder layers (embeddings, final norm "
        "and LM head frozen), 'all' every parameter, 'lora' rank-lora_rank adapters on every "
        "linear of the decoder layers, merged into the weights when saved"))
    lora_rank: int = Field(16, ge=1, le=1024, description="Rank of the adapters (train='lora')")
    general_share: float = Field(0.25, ge=0, le=1, description=(
        "Share of the training sequences drawn from general text (the rest: the expert's "
        "dimensions in equal shares); no general corpus: all from the dimensions"))
    gradient_checkpointing: bool = Field(False, description=(
        "Recompute layer activations in the backward pass: less memory, about 30 % more time"))
    baselines: list[str] | None = Field(None, description=(
        "Baselines healed too, each its own heal stage run with the same settings, so the "
        "comparison stays fair (unset: every baseline of the build; []: the expert only)"))
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> "HealSpec":
        if self.kl_weight == 0 and self.lm_weight == 0:
            raise ValueError("heal: kl_weight and lm_weight are both 0, so nothing would be "
                             "learned; set kl_weight > 0 (distillation) and/or lm_weight > 0")
        if self.micro_batch is not None and self.batch_size % self.micro_batch:
            raise ValueError(f"heal: micro_batch {self.micro_batch} does not divide batch_size "
                             f"{self.batch_size}; give a divisor (or leave it unset)")
        if self.tokens < self.batch_size * self.seq_len:
            raise ValueError(f"heal: tokens {self.tokens} is less than one step of batch_size x "
                             f"seq_len = {self.batch_size * self.seq_len}; raise tokens or lower "
                             "batch_size / seq_len")
        return self

    @property
    def steps(self) -> int:
        """Optimizer steps the budget buys (the last step may overshoot it by < one batch)."""
        per = self.batch_size * self.seq_len
        return -(-self.tokens // per)

    @property
    def micro(self) -> int:
        return self.micro_batch or self.batch_size

    def key_settings(self) -> dict:
        """What of the settings decides a healed checkpoint (the baselines list decides which
        slices are healed, not how)."""
        return self.model_dump(exclude={"baselines", *self.SPEED_ONLY})
