"""Masks: merge impact statistics into a PruningPlan (Cus-Prun), and the shared unit selection."""
from cusprun.plans.config import PruneConfig
from cusprun.plans.heads import HeadStructure, valid_structures
from cusprun.plans.merge import build_plan
from cusprun.plans.plan import LayerKeep, PruningPlan
from cusprun.plans.select import Selection, UnitScores, global_ranks, select_sets, select_units, to_plan

__all__ = ["HeadStructure", "LayerKeep", "PruneConfig", "PruningPlan", "Selection", "UnitScores",
           "build_plan", "global_ranks", "select_sets", "select_units", "to_plan", "valid_structures"]
