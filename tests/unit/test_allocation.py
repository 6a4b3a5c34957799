"""Allocation by measured damage: candidates are real masked models scored on held-back text;
the chosen plan is GQA-valid, meets the target, and per_layer never measures worse than
uniform on the held-back documents."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cusprun.adapters import Adapter
from cusprun.allocation import DamageProbe, search_allocation
from cusprun.compensation import CompensationConfig, GramSet
from cusprun.scoring import collect_grams
from cusprun.errors import CorpusError, SpecError
from cusprun.plans import PruneConfig, build_plan
from cusprun.plans.heads import valid_structures
from cusprun.plans.select import Allocation, UnitScores, distribute, select_units
from cusprun.scoring import collect_stats
from cusprun.slicing.validate import validate_plan
from tests.support import make_tiny_model, tiny_tokenizer

CALIB = ["The heart pumps blood through the body every second of the day.",
         "Fever is a common symptom of an infection by bacteria or viruses.",
         "Insulin is a hormone that lowers the level of sugar in the blood.",
         "The kidneys filter waste from the blood and make urine.",
         "Vaccines train the immune system to recognise a pathogen.",
         "Aspirin reduces pain, fever and inflammation in the body.",
         "The lungs exchange oxygen and carbon dioxide with the blood.",
         "Antibiotics kill bacteria but do not work against viruses."]
HELD = ["Blood pressure is the force of blood against the walls of arteries.",
        "A fracture is a break in the continuity of a bone."]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, _ = make_tiny_model("LlamaForCausalLM", num_hidden_layers=4)
    tok = tiny_tokenizer()
    stats = collect_stats(model, tok, CALIB, max_tokens=64, batch_size=4, progress=False)
    stats.summary["model_fingerprint"] = "fp"
    grams = tmp_path_factory.mktemp("g") / "grams"
    collect_grams(model, tok, CALIB, grams, max_tokens=64, batch_size=4, progress=False)
    return model, tok, stats, GramSet([grams])


def _probe(setup, mode="ls"):
    model, tok, _, gs = setup
    return DamageProbe(model, tok, {"domain": HELD, "task": HELD[:1]}, grams=gs,
                       compensation=CompensationConfig(mode=mode), max_tokens=64)


def _scores(stats):
    return UnitScores(ffn=stats.ffn_impact_mean.numpy(), heads=stats.head_impact_mean.numpy())


def _rule_choice(trials, probe, layout: str, z: float = 1.0) -> str:
    """The allocation rule, stated from the probe's paired differences: the first candidate
    (most heads kept) stands until a later one measures lower damage by more than z standard
    errors of the per-document difference; not the lowest damage. A per_layer plan whose
    winner is a uniform candidate takes that candidate placed per layer (exact target)."""
    best = trials[0]
    for t in trials[1:]:
        diff, se = probe.difference(t.per_doc, best.per_doc)
        if diff < -z * se:
            best = t
    if layout == "per_layer" and ", FFN " not in best.label:
        return f"{best.label}, FFN uniform"
    return best.label


@pytest.fixture(scope="module")
def searched(setup):
    """search(layout, ratio) -> (SearchResult, its probe), each searched once per module."""
    model, _, stats, _ = setup
    done = {}

    def search(layout, ratio):
        if (layout, ratio) not in done:
            probe = _probe(setup)
            done[layout, ratio] = (search_allocation(_scores(stats), Adapter.for_model(model),
                                                     model.config, probe, layout=layout,
                                                     target_ratio=ratio), probe)
        return done[layout, ratio]
    return search


@pytest.mark.parametrize("layout", ["uniform", "per_layer"])
@pytest.mark.parametrize("ratio", [0.1, 0.3])
def test_search_is_valid_and_meets_the_target(setup, searched, layout, ratio):
    model, _, stats, _ = setup
    dense_before = [p.clone() for p in model.parameters()]
    ad = Adapter.for_model(model)
    res, probe = searched(layout, ratio)
    assert res.trials and res.best.label == _rule_choice(res.trials, probe, layout)
    sel = res.selection
    prunable = ad.prunable_params(model.config)
    assert abs(sel.removed_params - ratio * prunable) <= ad.unit_params(model.config)["ffn_neuron"] * (
        model.config.num_hidden_layers if layout == "uniform" else 1)
    valid = set(valid_structures(ad, model.config, ad.dims(model.config)))
    d = ad.dims(model.config)
    for keep in sel.layers:                         # every layer is a valid GQA structure
        per = {g: sum(1 for h in keep.heads if h // d.group_size == g) for g in keep.kv_heads}
        assert len(set(per.values())) == 1
        assert any(s.groups == len(keep.kv_heads) and s.per_group == next(iter(per.values()))
                   for s in valid)
    if layout == "uniform":
        assert len({(len(k.ffn), len(k.heads)) for k in sel.layers}) == 1
    # the probe left the model dense
    assert all(torch.equal(a, b) for a, b in zip(dense_before, model.parameters()))
    report = res.report(probe)
    assert report["chosen"] == res.best.label and report["heldback_tokens"] > 0
    assert all(c["damage"] >= 0.5 for c in report["candidates"])


def test_per_layer_is_never_worse_than_uniform_on_heldback(searched):
    uni, _ = searched("uniform", 0.3)
    per, _ = searched("per_layer", 0.3)
    best = lambda r: min(t.damage for t in r.trials)  # noqa: E731
    assert best(per) <= best(uni) + 1e-9
    assert any("FFN by layer error" in t.label for t in per.trials)


def test_damage_reflects_the_real_masked_loss(setup):
    """Removing more costs more on held-back text; nothing removed costs nothing."""
    model, _, stats, _ = setup
    probe = _probe(setup, mode="none")
    ad = Adapter.for_model(model)
    lo = select_units(_scores(stats), ad, model.config, layout="uniform", target_ratio=0.05)
    hi = select_units(_scores(stats), ad, model.config, layout="uniform", target_ratio=0.6)
    assert probe.damage(probe.losses(hi)) > probe.damage(probe.losses(lo)) > 0.99
    assert probe.damage(probe.dense) == pytest.approx(1.0)


def test_build_plan_with_measured_allocation_records_the_search(setup):
    model, _, stats, _ = setup
    cfg = PruneConfig(target_ratio=0.25, min_docs=2, allocation="measured")
    plan = build_plan({"domain": [stats]}, cfg, model.config, base_fingerprint="fp",
                      probe=_probe(setup))
    search = plan.report["allocation_search"]
    assert search["chosen"] in [c["label"] for c in search["candidates"]]
    assert search["precision"] == "float32"
    assert plan.report["score_kind"] == "centered"
    validate_plan(plan, model.config, model_fingerprint="fp")
    with pytest.raises(SpecError, match="allocation='measured' needs a damage probe"):
        build_plan({"domain": [stats]}, cfg, model.config, base_fingerprint="fp")
    rank = build_plan({"domain": [stats]}, cfg.model_copy(update={"allocation": "rank"}),
                      model.config, base_fingerprint="fp")
    assert "allocation_search" not in rank.report


def test_probe_needs_heldback_documents(setup):
    model, tok, _, _ = setup
    with pytest.raises(CorpusError, match="held-back documents for every dimension"):
        DamageProbe(model, tok, {"domain": []})


def test_distribute_hits_the_total_within_caps():
    out = distribute(10, [1, 1, 8], [5, 5, 3])
    assert out.sum() == 10 and (out <= [5, 5, 3]).all() and out[2] == 3
    assert distribute(7, [0, 0, 0], [4, 4, 4]).sum() == 7
    assert list(distribute(0, [1, 2], [3, 3])) == [0, 0]
    assert distribute(50, [1, 1], [3, 4]).sum() == 7          # capped
    rng = np.random.default_rng(0)
    for _ in range(50):
        caps = rng.integers(0, 20, 6)
        n = int(rng.integers(0, caps.sum() + 1))
        got = distribute(n, rng.random(6), caps)
        assert got.sum() == n and (got <= caps).all() and (got >= 0).all()


def test_uniform_allocation_refuses_an_infeasible_structure(setup):
    model, _, stats, _ = setup
    ad = Adapter.for_model(model)
    st = valid_structures(ad, model.config, ad.dims(model.config))[-1]     # fewest heads kept
    with pytest.raises(SpecError, match="cannot meet a target"):
        select_units(_scores(stats), ad, model.config, layout="uniform", target_ratio=0.05,
                     allocation=Allocation((st,) * 4, None, "x"))


def test_paired_difference_and_its_standard_error(setup):
    probe = _probe(setup, mode="none")
    dense = probe.dense_per_doc
    assert probe.difference(dense, dense) == (0.0, 0.0)
    # Every document 0.1 nats/token worse: the difference is exactly 0.1 / dense, with no noise.
    worse = {k: [(nll + 0.1 * n, n) for nll, n in docs] for k, docs in dense.items()}
    diff, se = probe.difference(worse, dense)
    assert diff == pytest.approx(sum(0.1 / v for v in probe.dense.values()) / len(probe.dense))
    assert se == pytest.approx(0.0, abs=1e-12)
    # One document much worse, the other better: a mean near zero with a large error.
    k = "domain"
    (a, na), (b, nb) = dense[k]
    mixed = {**dense, k: [(a + 2.0 * na, na), (b - 2.0 * nb, nb)]}
    diff, se = probe.difference(mixed, dense)
    assert se > abs(diff)


def test_a_later_candidate_wins_only_beyond_the_noise(setup):
    """Constructed per-document losses where the lowest damage and the rule disagree: a later
    candidate with lower mean damage but documents that disagree (one much worse, one much
    better) does not displace the first; one better on every document does."""
    from cusprun.allocation.search import Trial, _Search

    model, _, stats, _ = setup
    probe = _probe(setup, mode="none")
    s = _Search(_scores(stats), Adapter.for_model(model), model.config, probe, layout="uniform",
                target_ratio=0.2, ffn_multiple=1)

    def trial(label, per_doc):   # losses and damage exactly as the probe derives them
        losses = {k: sum(x for x, _ in docs) / sum(n for _, n in docs) for k, docs in per_doc.items()}
        return Trial(label, None, probe.damage(losses), losses, 0.0, per_doc)

    first = trial("first", {k: [(nll + 0.2 * n, n) for nll, n in docs]
                            for k, docs in probe.dense_per_doc.items()})
    (a, na), (b, nb) = first.per_doc["domain"]
    swing = 0.5 * na                    # one document much worse, the other as much better...
    noisy = trial("noisy", {**first.per_doc, "domain": [(a + swing, na),
                                                        (b - swing - 0.01 * (na + nb), nb)]})
    clear = trial("clear", {k: [(nll - (0.05 + 0.01 * (-1) ** i) * n, n)   # ...every one better
                                for i, (nll, n) in enumerate(docs)]
                            for k, docs in first.per_doc.items()})
    diff, se = probe.difference(noisy.per_doc, first.per_doc)
    assert noisy.damage < first.damage and -se < diff < 0
    diff, se = probe.difference(clear.per_doc, first.per_doc)
    assert 0 < se < -diff
    s.trials = [first, noisy]
    assert min(s.trials, key=lambda t: t.damage) is noisy and s.best() is first
    s.trials = [first, noisy, clear]
    assert s.best() is clear            # beyond the noise
    s.trials = [first, clear, noisy]
    assert s.best() is clear            # the noisy one after it does not displace it
    s.z = 0.0                           # without the margin, lower damage alone wins
    s.trials = [first, noisy]
    assert s.best() is noisy
    s.z = 1e9                           # an unreachable margin keeps the first candidate
    s.trials = [first, noisy, clear]
    assert s.best() is first


def test_dense_heldback_losses_are_shared_by_key(setup):
    """Concurrent merges at several ratios measure the same dense model once: a probe with the
    same dense_key reuses the first one's losses (and per-document values)."""
    import threading

    from cusprun.allocation import probe as probe_mod

    model, tok, _, gs = setup
    key = "test-dense-key"
    probe_mod._DENSE.pop(key, None)
    made = []
    real = DamageProbe._measure

    def counted(self, plan):
        made.append(plan is None)
        return real(self, plan)

    probes = []
    try:
        DamageProbe._measure = counted
        threads = [threading.Thread(target=lambda: probes.append(DamageProbe(
            model, tok, {"domain": HELD}, grams=gs, dense_key=key))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        DamageProbe._measure = real
    assert made == [True] and len(probes) == 3
    assert all(p.dense == probes[0].dense and p.dense_per_doc == probes[0].dense_per_doc for p in probes)
    fresh = DamageProbe(model, tok, {"domain": HELD}, grams=gs)
    assert fresh.dense == pytest.approx(probes[0].dense)


def test_bfloat16_probe_measures_close_to_float32_and_leaves_weights_float32(setup):
    model, tok, stats, gs = setup
    ad = Adapter.for_model(model)
    sel = select_units(_scores(stats), ad, model.config, layout="uniform", target_ratio=0.3)
    f32 = _probe(setup)
    b16 = DamageProbe(model, tok, {"domain": HELD, "task": HELD[:1]}, grams=gs,
                      compensation=CompensationConfig(mode="ls"), max_tokens=64, precision="bfloat16")
    assert (f32.precision, b16.precision) == ("float32", "bfloat16")
    assert b16.damage(b16.losses(sel)) == pytest.approx(f32.damage(f32.losses(sel)), abs=0.02)
    assert all(p.dtype == torch.float32 for p in model.parameters())
