"""Iterative pruning's work list, checked on keys alone (no model, no Prefect): one round is
today's build key for key; later rounds chain on the round before's slice; a rebuild with
another number of rounds reuses the dense statistics (and the rounds it shares); settings that
rounds cannot honour are refused before any work."""
from __future__ import annotations

import pytest

from cusprun.errors import SpecError
from cusprun.pipeline import keys
from cusprun.pipeline.spec import load_spec
from cusprun.pipeline.validate import validate_build
from cusprun.pipeline.worklist import plan_work
from tests.support.worklist import CORPORA, CPU, EVAL, MODEL, work

# The work list's keys on main before iterative pruning existed (tests.support.worklist.work(),
# code versions pinned to zeros so that only what each key is made of counts).
BEFORE_ROUNDS = {
    "evaluate": "7bcbb2e2d0d192dcb4e8909e", "grams domain": "38f0774e9bc21509cdd174c5",
    "grams language": "5d654f2d7336f2b5c9efe6d4", "grams task": "f3270e4a3852fa2d85f9960b",
    "plan cusprun@0.1": "24e9a173394e5b2eea337e39", "plan cusprun@0.25": "a67eddbb1beb767a6d5d5be7",
    "plan flap@0.1": "e58d921963ea24c7405973a3", "plan flap@0.25": "c1a3223f5076f3bfbbe6c410",
    "plan magnitude@0.1": "7a30f41666a884a68ca81540",
    "plan magnitude@0.25": "dcb6b896c5626a3058aceabf", "scores": "0cbbedbddbcb7bdddff2dd34",
    "slice cusprun@0.25": "beba924b6d04b1c03aead98e", "slice flap@0.25": "a169003ee8c3605141a38c47",
    "slice magnitude@0.25": "eca759a1305c8651cf14008a",
    "stats domain": "14312e9985aee0b304b25447", "stats general": "8b50c77267eb0977a5cb72f4",
    "stats language": "992c466d8e751a28e2e1ebac", "stats task": "1fbb48cae10ea2712f3cfaa8"}


@pytest.fixture
def pinned_code(monkeypatch):
    monkeypatch.setattr(keys, "code_version", lambda stage: "0" * 64)


def _spec(**over):
    return load_spec({"baselines": [], "evaluation": {"enabled": False}, **over})


def _wl(**over):
    return plan_work(_spec(**over), MODEL, CORPORA, EVAL, CPU)


def test_one_round_makes_exactly_the_keys_of_a_build_before_rounds(pinned_code):
    spec = load_spec({"baselines": ["magnitude", "flap"], "rounds": 1,
                      "evaluation": {"sweep_ratios": [0.1, 0.25]}})
    assert {k: v.split("-")[0] for k, v in work(spec).items()} == BEFORE_ROUNDS
    assert plan_work(spec, MODEL, CORPORA, EVAL, CPU).rounds == {}


def test_round_one_is_the_one_shot_plan_at_target_over_k_and_later_rounds_chain():
    wl, half = _wl(rounds=2), _wl(target_ratios=[0.125])
    r1, r2 = wl.rounds[0.25]
    assert r1.plan.key == half.plans[("cusprun", 0.125)].key        # today's plan at 0.25/2
    assert r1.slice.key == half.slices[("cusprun", 0.125)].key
    assert r1.statistics == [] and r1.model == MODEL                  # dense statistics
    assert r2.model["slice"] == r1.slice.key                          # runs on round 1's slice
    assert r2.plan.inputs["previous"] == r1.plan.key
    assert r2.plan.inputs["prune"]["target_ratio"] == 0.25            # cumulative, base terms
    dense = {s.stats.key for s in wl.statistics}
    assert {s.group for s in r2.statistics} == {s.group for s in wl.statistics}
    assert not dense & {s.stats.key for s in r2.statistics}
    assert r2.plan.inputs["stats"]["domain"] == [s.stats.key for s in r2.statistics
                                                 if s.group == "domain"]
    assert r2.slice.inputs["grams"] == [s.grams.key for s in r2.statistics if s.grams]
    assert wl.slices[("cusprun", 0.25)] is r2.slice                  # what evaluate/publish see
    assert ("cusprun", 0.25) not in wl.plans                          # no one-shot plan at 0.25


def test_a_rebuild_with_another_k_reuses_the_dense_statistics_and_shared_rounds():
    k1, k2, k4 = _wl(), _wl(rounds=2), _wl(rounds=4)
    stats = lambda wl: [(s.stats.key, s.grams and s.grams.key) for s in wl.statistics]  # noqa: E731
    assert stats(k1) == stats(k2) == stats(k4)
    assert k2.slices[("cusprun", 0.25)].key != k4.slices[("cusprun", 0.25)].key
    # k=4 at 0.5 goes through 0.125 and 0.25 as k=2 at 0.25 does: those rounds are shared
    wide = _wl(rounds=4, target_ratios=[0.5])
    assert [(r.plan.key, r.slice.key) for r in wide.rounds[0.5][:2]] == \
        [(r.plan.key, r.slice.key) for r in k2.rounds[0.25]]
    assert wide.rounds[0.5][2].model["slice"] == k2.slices[("cusprun", 0.25)].key
    # the compensation shapes every round's slice, hence every later round; not the dense pass
    ridge = _wl(rounds=2, ridge=0.5)
    assert [s.stats.key for s in ridge.rounds[0.25][1].statistics] != \
        [s.stats.key for s in k2.rounds[0.25][1].statistics]   # round 2 runs on a new slice
    assert stats(ridge) == stats(k2)


def test_the_evaluation_sees_the_last_round_and_the_sweep_stays_one_shot():
    wl = plan_work(load_spec({"baselines": [], "rounds": 2,
                              "evaluation": {"sweep_ratios": [0.1, 0.25]}}),
                   MODEL, CORPORA, EVAL, CPU)
    ev = wl.evaluation.inputs
    assert ev["candidates"]["cusprun@0.25"]["key"] == wl.rounds[0.25][-1].slice.key
    assert ev["overlap_plan"] == wl.rounds[0.25][-1].plan.key
    assert ev["sweep"]["cusprun@0.25"]["plan"] == wl.plans[("cusprun", 0.25)].key
    assert "previous" not in wl.plans[("cusprun", 0.25)].inputs


@pytest.mark.parametrize("over, match", [
    ({"rounds": 0}, r"rounds: Input should be greater than or equal to 1 \(got 0\)"),
    ({"rounds": 17}, r"rounds: Input should be less than or equal to 16 \(got 17\)"),
    ({"rounds": 2.5}, r"rounds: Input should be a valid integer"),
])
def test_rounds_out_of_range_name_the_field(over, match):
    with pytest.raises(SpecError, match=match):
        _spec(**over)


@pytest.mark.parametrize("over, match", [
    ({"layout": "per_layer"}, "rounds=2 needs layout='uniform': a per_layer round"),
    ({"rule": "paper"}, "rounds=2 needs rule='exact-ratio'"),
])
def test_settings_rounds_cannot_honour_are_refused_by_validate_build(over, match):
    spec = _spec(rounds=2, **over)
    with pytest.raises(SpecError, match=match):
        validate_build(spec)
    validate_build(_spec(**over))                 # one shot: fine
