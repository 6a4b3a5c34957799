"""Masks: merge impact statistics into a PruningPlan (Cus-Prun), and the shared unit selection."""
from cusprun.masks.config import PruneConfig
from cusprun.masks.heads import HeadStructure, valid_structures
from cusprun.masks.merge import build_plan
from cusprun.masks.plan import LayerKeep, PruningPlan
from cusprun.masks.select import Selection, UnitScores, global_ranks, select_sets, select_units, to_plan

__all__ = ["HeadStructure", "LayerKeep", "PruneConfig", "PruningPlan", "Selection", "UnitScores",
           "build_plan", "global_ranks", "select_sets", "select_units", "to_plan", "valid_structures"]
