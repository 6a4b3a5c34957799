"""The build's steps, each written once: statistics, baseline scores, Cus-Prun plans and baseline
plans. `cusprun.prune`, the pipeline's stages (which add storage and caching around them) and
the benchmarks all call these. Settings come in as the dicts that cusprun.pipeline.plan_inputs
derives from an ExpertSpec, the same ones the stages' cache keys hold; results stay in memory.

Modules: stats (the statistics pass), plan (Cus-Prun plans and their allocation probe),
baseline (baseline scores and plans). Import the module you need: each stage's code version
(cusprun.pipeline.codehash) then covers only the steps it runs."""
