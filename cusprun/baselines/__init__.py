"""Baselines pruned through the same selection code as Cus-Prun: random, magnitude, wanda-sp, flap."""
from cusprun.baselines.plan import baseline_plan, validate_baseline
from cusprun.baselines.scorers import BASELINES, NEEDS_GENERAL, standardise

__all__ = ["BASELINES", "NEEDS_GENERAL", "baseline_plan", "standardise", "validate_baseline"]
