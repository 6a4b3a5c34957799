"""One name per stage: the spec's refresh entry, the Prefect task, the stage module and function,
and the store prefix are the same word (grams are computed by the stats stage's pass; baseline
plans are stored beside Cus-Prun's under plan/)."""
from __future__ import annotations

import importlib
from typing import get_args


def test_every_stage_has_one_name_across_spec_task_module_function_and_store():
    import tasks.build as t
    from cusprun.pipeline.spec import Stage
    from cusprun.storage.layout import stage_key

    task_names = {getattr(t, n).name for n in dir(t)
                  if n.endswith("_task") and hasattr(getattr(t, n), "submit")}
    for stage in get_args(Stage):
        runs_in = "stats" if stage == "grams" else stage
        assert runs_in in task_names, (stage, task_names)
        module = importlib.import_module(f"cusprun.pipeline.stages.{runs_in}")
        assert callable(getattr(module, f"{runs_in}_stage")), stage
        assert stage_key(stage, "k").split("/")[0] == ("plan" if stage == "baseline" else stage)
    assert task_names == {*get_args(Stage), "publish"} - {"grams"}
