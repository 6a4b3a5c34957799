"""Baselines pruned through the same selection code as Cus-Prun: random, magnitude, wanda-sp, flap."""
from cusprun.baselines.plan import baseline_plan, plan_from_scores, validate_baseline
from cusprun.baselines.scorers import BASELINES, NEEDS_GENERAL, standardise, unit_scores

__all__ = ["BASELINES", "NEEDS_GENERAL", "baseline_plan", "plan_from_scores", "standardise",
           "unit_scores", "validate_baseline"]
