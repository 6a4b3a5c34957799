"""Healing: an optional distillation of a sliced expert from its dense base model on the
expert's calibration text plus general text, for a token budget (docs/healing.md).

Modules: config (HealSpec), data (packing, schedule), loss (top-k KL, LM loss), teacher (the
teacher cache), lora (adapters merged on save), distill (the loop: `heal`), save (the healed
checkpoint in the sliced checkpoint's layout)."""
from cusprun.healing.config import HealSpec

__all__ = ["HealSpec"]
