"""cusprun.prune from Python: one call from corpora to an expert that saves as a standard
checkpoint computing what the in-memory expert computes; baselines through the same call; bad
input refused before any model is loaded."""
from __future__ import annotations

import pytest
import torch

import cusprun
from cusprun.errors import CorpusError, SpecError
from tests.support import make_tiny_model, tiny_tokenizer

WORDS = "heart blood fever dose patient clinic nurse river city music light water".split()


def _docs(n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (20,), generator=g))
            for _ in range(n)]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model("LlamaForCausalLM", tmp_path_factory.mktemp("m") / "tiny")[1]


def test_prune_saves_an_expert_that_equals_the_in_memory_one(base, tmp_path):
    from transformers import AutoModelForCausalLM

    corpora = {"domain": _docs(16, 0), "task": _docs(16, 1)}
    experts = cusprun.prune(base, corpora, ratio=[0.2, 0.4], max_tokens=32, holdback_docs=4,
                            work_dir=tmp_path / "work", progress=False)
    assert [round(e.ratio, 1) for e in experts] == [0.2, 0.4]
    expert = experts[0]
    assert expert.plan.report["allocation_search"]["candidates"]      # measured allocation
    assert expert.compensation.mode == "ls" and expert.grams is not None
    out = expert.save(tmp_path / "expert", progress=False)
    saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    x = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (saved(x).logits - expert.model()(x).logits).abs().max() < 1e-4
    assert sum(p.numel() for p in saved.parameters()) < sum(
        p.numel() for p in make_tiny_model("LlamaForCausalLM")[0].parameters())


@pytest.mark.parametrize("rounds", [1, 2])
def test_prune_with_heal_saves_the_healed_expert_in_the_sliced_shapes(base, tmp_path, rounds):
    """heal= takes the pipeline's HealSpec: the expert is sliced, distilled from the base model,
    and save() writes the healed checkpoint (what model() computes), loadable in stock
    transformers with the sliced tensors' shapes. With rounds=2 the last round's expert heals."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from cusprun.healing import HealSpec

    corpora = {"domain": _docs(16, 0)}
    heal = HealSpec(tokens=1024, seq_len=32, batch_size=4, lr=1e-3, top_k=8)
    expert = cusprun.prune(base, corpora, ratio=0.4, max_tokens=32, allocation="rank",
                           compensation="none",
                           general=_docs(8, 5), heal=heal, rounds=rounds, work_dir=tmp_path / "w",
                           progress=False)
    assert abs(expert.ratio - 0.4) < 0.02 and len(expert.plan.report.get("rounds", [0])) == rounds
    rec = expert.report["healing"]
    assert rec["tokens"] == 1024 and set(rec["groups"]) == {"domain", "general"}
    if rounds == 1:   # two rounds leave this tiny model's KL near zero: nothing to learn there
        assert rec["kl_after"] < rec["kl_before"]
    out = expert.save(tmp_path / "expert")
    sliced = load_file(tmp_path / "w" / "sliced-0" / "model.safetensors")
    healed = load_file(out / "model.safetensors")
    assert {k: v.shape for k, v in sliced.items()} == {k: v.shape for k, v in healed.items()}
    assert not torch.equal(sliced["model.layers.0.mlp.down_proj.weight"],
                           healed["model.layers.0.mlp.down_proj.weight"])
    saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    x = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (saved(x).logits - expert.model()(x).logits).abs().max() < 1e-5


def test_a_loaded_model_and_a_baseline(tmp_path):
    model, _ = make_tiny_model("Qwen2ForCausalLM")
    expert = cusprun.prune(model, {"language": _docs(10, 2)}, ratio=0.3, method="flap",
                           general=_docs(10, 3), tokenizer=tiny_tokenizer(), max_tokens=32,
                           work_dir=tmp_path, progress=False)
    assert expert.plan.method == "flap" and abs(expert.ratio - 0.3) < 0.05
    assert expert.compensation.mode == "none"       # Qwen2 cannot carry FLAP's biases: said
    assert "Qwen2" in expert.plan.report["setup"]["note"]


def test_flap_brings_its_own_layout_and_bias_compensation(tmp_path):
    """method='flap' is FLAP as published: per-layer widths, the mean of what it removes put back
    as biases from the general text (not the `compensation` asked for the others); the saved
    expert computes what the in-memory one does."""
    from transformers import AutoModelForCausalLM

    from cusprun.compensation import ChannelMeans

    model, _ = make_tiny_model("LlamaForCausalLM")
    expert = cusprun.prune(model, {"language": _docs(10, 2)}, ratio=0.3, method="flap",
                           general=_docs(10, 3), tokenizer=tiny_tokenizer(), max_tokens=32,
                           compensation="ls", work_dir=tmp_path, progress=False)
    assert expert.plan.layout == "per_layer" and expert.compensation.mode == "bias"
    assert isinstance(expert.grams, ChannelMeans) and not (tmp_path / "grams").exists()
    out = expert.save(tmp_path / "expert", progress=False)
    saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    x = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (saved(x).logits - expert.model()(x).logits).abs().max() < 1e-4
    assert saved.model.layers[0].mlp.down_proj.bias is not None


def test_general_text_protects_the_units_it_needs_most(tmp_path):
    """protect_fraction: the units general text ranks highest on average are never pruned; more
    protection keeps more of them, and the plan reports how many."""
    model, _ = make_tiny_model("LlamaForCausalLM")
    plans = {}
    general = [d.upper() for d in _docs(12, 5)]     # other tokens than the domain's
    for pf in (0.0, 0.3):
        e = cusprun.prune(model, {"domain": _docs(12, 4)}, ratio=0.3, general=general,
                          tokenizer=tiny_tokenizer(), max_tokens=32, allocation="rank",
                          protect_fraction=pf, work_dir=tmp_path / str(pf), progress=False)
        plans[pf] = e.plan
    off, on = plans[0.0].report["protected"], plans[0.3].report["protected"]
    assert off["ffn"] == 0 and on["ffn"] > 0 and on["protect_fraction"] == 0.3
    assert plans[0.0].layers != plans[0.3].layers


BAD_SETTINGS = [
    (dict(ratio=0.95), SpecError, r"ratio: target ratio 0.95 is outside \(0, 0.9\]"),
    (dict(method="obs"), SpecError, "method='obs'; accepted: cusprun, random"),
    (dict(layout="perlayer"), SpecError, r"layout: Input should be 'uniform' or 'per_layer'"),
    (dict(allocation="measure"), SpecError, r"allocation: Input should be 'measured' or 'rank'"),
    (dict(compensation="lsq"), SpecError, "compensation: Input should be 'none', 'bias'"),
    (dict(ridge=-1), SpecError, "ridge: Input should be greater than or equal to 0"),
    (dict(protect_fraction=1.0), SpecError, "protect_fraction: Input should be less than 1"),
    (dict(method="wanda-sp"), SpecError, "general corpus"),
    (dict(device="cuda"), SpecError, "device='cuda' but this machine has no CUDA"),
    (dict(layouts="uniform"), SpecError, "no setting 'layouts'; settings: rule, score"),
    (dict(corpora={"domain": []}), CorpusError, "non-empty list"),
    (dict(corpora={"domain": ["one document"] * 12}), CorpusError,
     "has 12 documents; its statistics need at least 8 .* give at least 16"),
    (dict(rounds=0), SpecError, r"rounds: Input should be greater than or equal to 1 \(got 0\)"),
    (dict(rounds=17), SpecError, r"rounds: Input should be less than or equal to 16"),
    (dict(rounds=2, layout="per_layer"), SpecError, "rounds=2 needs layout='uniform'"),
    (dict(rounds=2, method="magnitude"), SpecError, "baselines .* are one shot"),
    (dict(corpora={}), SpecError, "1 to 3 dimensions"),
    (dict(heal={"lr": 0}), SpecError, "heal.lr: Input should be greater than 0"),
    (dict(heal={"train": "heads"}), SpecError, "heal.train: Input should be 'layers', 'all'"),
    (dict(corpora={"medicine": ["a"] * 20}), SpecError, "dimension 'medicine'; accepted: language"),
]


@pytest.mark.parametrize("kwargs, err, match", BAD_SETTINGS)
def test_bad_input_is_refused_in_under_a_second_before_the_model_is_touched(kwargs, err, match,
                                                                             monkeypatch):
    """On the embedded model: every bad setting fails before its weights (or even its config)
    are read, in well under a second (the statistics pass it used to wait for takes ~30 s)."""
    import time

    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    loads = []
    monkeypatch.setattr("cusprun.models.resolve_model", lambda *a, **k: loads.append(a))
    args = {"corpora": {"domain": ["a document"] * 20}, **kwargs}
    t0 = time.perf_counter()
    with pytest.raises(err, match=match):
        cusprun.prune("smollm2-135m", args.pop("corpora"), **args)
    assert time.perf_counter() - t0 < 1.0 and not loads


@pytest.mark.integration
def test_the_embedded_model_from_bundled_corpora_saves_a_stock_expert(tmp_path):
    """What examples/prune.py does, on fewer documents: the embedded SmolLM2-135M pruned from
    Python, saved, and loaded by stock transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpora = {"language": "bundled://language/en", "domain": "bundled://domain/health?lang=en",
               "task": "bundled://task/qa?domain=health&lang=en"}
    expert = cusprun.prune("smollm2-135m", corpora, ratio=0.25, max_docs=8, max_tokens=48,
                           holdback_docs=4, work_dir=tmp_path / "work", progress=False)
    assert abs(expert.ratio - 0.25) < 0.01
    out = expert.save(tmp_path / "expert", progress=False)
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    ids = tok("Question: What is insulin?\nAnswer:", return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**ids).logits).all()


def test_settings_have_one_default_the_spec_s_and_the_spec_takes_the_library_s():
    """prune() declares no default of its own: its settings are ExpertSpec fields with
    ExpertSpec's defaults, which are PruneConfig's and CompensationConfig's."""
    import inspect

    from cusprun.api import SETTINGS, build_spec
    from cusprun.compensation import CompensationConfig
    from cusprun.pipeline.spec import ExpertSpec
    from cusprun.plans import PruneConfig

    assert not set(SETTINGS) & set(inspect.signature(cusprun.prune).parameters)
    built, default = build_spec({"domain": ["d"] * 20}), ExpertSpec()
    assert {k: getattr(built, k) for k in SETTINGS} == {k: getattr(default, k) for k in SETTINGS}
    assert built.target_ratios == [PruneConfig().target_ratio]
    for name in ("rule", "score", "allocation", "sigma", "layout", "min_docs", "protect_fraction",
                 "ffn_multiple"):
        assert getattr(default, name) == getattr(PruneConfig(), name), name
    comp = CompensationConfig()
    assert (default.compensation, default.ridge) == (comp.mode, comp.ridge)


def test_two_rounds_reach_the_target_exactly_on_the_pruned_model(base, tmp_path):
    """rounds=2: round 1 at half the target from the dense model; round 2 measured on round 1's
    sliced, compensated checkpoint, planned on its units, mapped back to base units; the saved
    expert is a stock checkpoint computing what the in-memory one computes."""
    import json

    from transformers import AutoModelForCausalLM

    from cusprun.slicing.validate import validate_plan
    from cusprun.models.loading import load_config

    corpora = {"domain": _docs(16, 0), "task": _docs(16, 1)}
    one = cusprun.prune(base, corpora, ratio=0.3, max_tokens=32, holdback_docs=4,
                        work_dir=tmp_path / "one", progress=False)
    two = cusprun.prune(base, corpora, ratio=0.3, max_tokens=32, holdback_docs=4, rounds=2,
                        work_dir=tmp_path / "two", progress=False)
    assert abs(two.ratio - 0.3) <= abs(one.ratio - 0.3) + 1e-9 and abs(two.ratio - 0.3) < 0.02
    rounds = two.plan.report["rounds"]
    assert len(rounds) == 2 and rounds[0]["cumulative_ratio"] < rounds[1]["cumulative_ratio"]
    validate_plan(two.plan, load_config(base), model_fingerprint=two.plan.base_fingerprint)
    # round 2 was planned on round 1's checkpoint: its units are the ones round 1 kept
    before = json.loads((two.last_round.checkpoint / "cusprun.json").read_text())["layers"]
    round1 = load_config(two.last_round.checkpoint)
    assert round1.intermediate_size == len(before[0]["ffn"]) < load_config(base).intermediate_size
    assert all(max(layer.ffn) < round1.intermediate_size for layer in two.last_round.plan.layers)
    kept = [set(b["ffn"]) for b in before]
    assert all(set(layer.ffn) <= k for layer, k in zip(two.plan.layers, kept))
    out = two.save(tmp_path / "expert", progress=False)
    meta = json.loads((out / "cusprun.json").read_text())
    assert meta["achieved_ratio"] == two.ratio and meta["layers"] == [
        layer.model_dump() for layer in two.plan.layers]
    assert meta["params"]["dense"]["total"] - meta["params"]["removed"] == \
        meta["params"]["pruned"]["total"]
    saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    x = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (saved(x).logits - two.model()(x).logits).abs().max() < 1e-4
