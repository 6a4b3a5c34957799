"""Measuring several models at once: how many, copies, and the job runner."""
from __future__ import annotations

import threading

import pytest
import torch

from cusprun.evaluation import replicas
from cusprun.evaluation.replicas import replicate, resolve_workers, run_jobs
from tests.support import make_tiny_model


def test_explicit_worker_counts_are_taken_and_bad_ones_named():
    model, _ = make_tiny_model("LlamaForCausalLM")
    assert resolve_workers(3, model) == 3
    for bad in (0, -1, "two", 1.5, True):
        with pytest.raises(ValueError, match=f"workers={bad!r}: give 'auto' or a whole number"):
            resolve_workers(bad, model)


def test_auto_makes_a_copy_only_with_two_cores_and_room_for_it(monkeypatch):
    model, _ = make_tiny_model("LlamaForCausalLM")
    size = model.get_memory_footprint()
    monkeypatch.setattr(replicas, "cpu_cores", lambda: 2)
    monkeypatch.setattr(replicas, "available_memory", lambda: 100 * size)
    assert resolve_workers("auto", model) == 2
    monkeypatch.setattr(replicas, "available_memory", lambda: 3 * size)   # copy > a quarter
    assert resolve_workers("auto", model) == 1
    monkeypatch.setattr(replicas, "available_memory", lambda: None)       # unknown: no copy
    assert resolve_workers("auto", model) == 1
    monkeypatch.setattr(replicas, "available_memory", lambda: 100 * size)
    monkeypatch.setattr(replicas, "cpu_cores", lambda: 1)
    assert resolve_workers("auto", model) == 1


def test_this_machine_reports_its_memory_and_cores():
    assert replicas.available_memory() > 0 and replicas.cpu_cores() >= 1


def test_copies_are_independent():
    model, _ = make_tiny_model("LlamaForCausalLM")
    a, b = replicate(model, 2)
    assert a is model and b is not model
    with torch.no_grad():
        next(b.parameters()).zero_()
    assert next(a.parameters()).abs().sum() > 0


def test_jobs_run_in_parallel_each_state_serving_one_job_at_a_time_results_in_order():
    """Jobs 0 and 1 wait for each other at a barrier: they can only both pass it if two states
    run them at once (the one that holds job 0 cannot take job 1 while it waits). Every job
    records how many jobs its state, and both states, are running."""
    busy = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0, "both": 0}
    lock = threading.Lock()
    meet = threading.Barrier(2, timeout=60)   # broken (an error) if the jobs never overlap

    def fn(state, job, overlap=True):
        with lock:
            busy[state] += 1
            peak[state] = max(peak[state], busy[state])
            peak["both"] = max(peak["both"], busy["a"] + busy["b"])
        if overlap and job in (0, 1):
            meet.wait()
        with lock:
            busy[state] -= 1
        return job * 10

    assert run_jobs(["a", "b"], list(range(12)), fn, progress=False) == [j * 10 for j in range(12)]
    assert peak["a"] == 1 and peak["b"] == 1 and peak["both"] == 2
    assert run_jobs(["a"], [1, 2], lambda s, j: fn(s, j, overlap=False), progress=False) == [10, 20]


def test_the_first_error_of_a_job_is_raised():
    def fn(state, job):
        if job == 3:
            raise RuntimeError("job 3 failed")
        return job

    with pytest.raises(RuntimeError, match="job 3 failed"):
        run_jobs(["a", "b"], list(range(6)), fn, progress=False)


def test_spec_takes_auto_or_a_count_and_keeps_it_out_of_the_report_key():
    from cusprun.pipeline.spec import EvaluationOptions

    assert EvaluationOptions().sweep_workers == "auto"
    assert EvaluationOptions(sweep_workers=2).sweep_workers == 2
    for bad in (0, 65, "many"):
        with pytest.raises(ValueError, match="sweep_workers"):
            EvaluationOptions(sweep_workers=bad)
    assert "sweep_workers" in EvaluationOptions.SPEED_ONLY
