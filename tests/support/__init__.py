"""Test support shared by tests/ and benchmarks/ (not shipped in the cusprun package): tiny
random models of every supported family with a byte tokenizer (tiny.py), and synthetic plans and
random model shapes (synthetic.py). Import as `tests.support`: pytest puts the repository root on
sys.path (pyproject.toml, pythonpath), and benchmarks run as modules from it (`python -m
benchmarks ...`).

Helpers for tests only, one module each (import as `from tests.support.<module> import ...`);
fixtures live in tests/conftest.py and the Prefect server plugin, prefect_server.py:
  paths           REPO, CUSPRUN, cusprun_env, render_script
  wait            wait_until: poll a condition instead of sleeping a guessed time
  network         free/closed loopback ports, tcp_connects (count connection attempts)
  files           artifact_dir, tree_state (proof that nothing was rewritten)
  flow_helpers    tiny_spec, run_build, settled_task_runs, task_states, failed_task
  worklist        a build's work list and its keys without Prefect
  s3_faults       FaultyEndpoint, RestartableS3, IAM users, store_through
  sigkill         killed_at_marker: SIGKILL a process at a point it marks
  report_helpers  synthetic_report
"""
from tests.support.synthetic import (plan_from_keeps, random_plan, smollm2_135m_shaped_config,
                                     uniform_plan_for_ratio, write_random_model)
from tests.support.tiny import TINY_FAMILIES, make_tiny_model, tiny_config, tiny_tokenizer

__all__ = ["TINY_FAMILIES", "make_tiny_model", "plan_from_keeps", "random_plan",
           "smollm2_135m_shaped_config", "tiny_config", "tiny_tokenizer", "uniform_plan_for_ratio",
           "write_random_model"]
