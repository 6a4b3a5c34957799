"""Plans: Cus-Prun merges impact statistics into a PruningPlan (which units each layer keeps);
the unit selection here is shared with the baselines."""
from cusprun.plans.config import PruneConfig
from cusprun.plans.heads import HeadStructure, valid_structures
from cusprun.plans.merge import build_plan
from cusprun.plans.plan import LayerKeep, PruningPlan
from cusprun.plans.select import Selection, UnitScores, global_ranks, select_sets, select_units, to_plan

__all__ = ["HeadStructure", "LayerKeep", "PruneConfig", "PruningPlan", "Selection", "UnitScores",
           "build_plan", "global_ranks", "select_sets", "select_units", "to_plan", "valid_structures"]
