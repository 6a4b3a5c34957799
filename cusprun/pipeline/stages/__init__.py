"""The pipeline's stages as plain functions, one module each: inputs are keys, records and specs,
outputs are small dicts (the artifact's commit record). Each stage returns the committed record
when its artifact is already in the store under its key (the one cache layer), else works in a
local scratch directory, uploads, and commits (DONE record last). Prefect tasks wrap these; the
code each module reaches versions its cache keys (cusprun.pipeline.keys)."""
