"""Baselines pruned through the same selection code as Cus-Prun: random, magnitude, wanda-sp, flap
(FLAP as published) and flap-score (FLAP's scores under the build's layout and compensation)."""
from cusprun.baselines.methods import (BASELINES, METHODS, NEEDS_GENERAL, BaselineSetup,
                                       baseline_setup, bias_family)
from cusprun.baselines.plan import baseline_plan, plan_from_scores, validate_baseline
from cusprun.baselines.scorers import standardise, unit_scores

__all__ = ["BASELINES", "METHODS", "NEEDS_GENERAL", "BaselineSetup", "baseline_plan",
           "baseline_setup", "bias_family", "plan_from_scores", "standardise", "unit_scores",
           "validate_baseline"]
