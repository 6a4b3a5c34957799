"""The ratio sweep: masked (and compensated) points on the loss sets, the table and the plot."""
from __future__ import annotations

import threading

import pytest
import torch

from cusprun.compensation import GramSet
from cusprun.scoring import collect_grams
from cusprun.evaluation.items import LossExample
from cusprun.evaluation.likelihood import heldout_loss
from cusprun.evaluation.sweep import plot_sweep, run_sweep, sweep_markdown
from tests.support import make_tiny_model, random_plan, tiny_tokenizer

TEXTS = ["The heart pumps blood through the body.", "Fever is a common symptom of infection.",
         "Insulin lowers the level of sugar in the blood.", "The lungs take in oxygen."]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, _ = make_tiny_model("LlamaForCausalLM")
    tok = tiny_tokenizer()
    g = tmp_path_factory.mktemp("g") / "grams"
    collect_grams(model, tok, TEXTS, g, max_tokens=32, progress=False)
    plans = {f"{m}@{r}": (m, r, random_plan(model.config, fingerprint="fp", ffn=int(96 * (1 - r)),
                                            groups=2, heads_per_group=2, layout="uniform", seed=i))
             for i, (m, r) in enumerate([("cusprun", 0.1), ("cusprun", 0.4), ("random", 0.4)])}
    sets = {"domain=health": [LossExample(text=t) for t in TEXTS[:2]],
            "general=en": [LossExample(text=t) for t in TEXTS[2:]]}
    return model, tok, GramSet([g]), plans, sets


def test_sweep_rows_match_a_direct_measurement_and_leave_the_model_dense(setup):
    model, tok, gs, plans, sets = setup
    before = [p.clone() for p in model.parameters()]
    rows = run_sweep(model, tok, plans, sets, grams=gs, modes=["ls", "none"], ridge=0.1,
                     max_tokens=32, progress=False)
    assert len(rows) == 2 + 3 * 2 * 2
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    dense = {r["eval_set"]: r["loss"] for r in rows if r["method"] == "dense"}
    assert dense["general=en"] == pytest.approx(heldout_loss(model, tok, sets["general=en"],
                                                             max_tokens=32, progress=False).loss)
    for r in rows:
        assert r["retention"] == pytest.approx(dense[r["eval_set"]] / r["loss"])
        assert r["seconds"] > 0 and r["precision"] == "float32"
    # Compensation changes the result of the same plan; more removed costs more without it.
    get = {(r["method"], r["ratio"], r["compensation"], r["eval_set"]): r["loss"] for r in rows}
    assert get[("cusprun", 0.4, "ls", "domain=health")] != get[("cusprun", 0.4, "none", "domain=health")]


def test_known_points_are_not_measured_again(setup):
    model, tok, gs, plans, sets = setup
    known = {("cusprun@0.1", "ls"): {"domain=health": (9.0, 10), "general=en": (8.0, 10)},
             ("dense", "none"): {"domain=health": (4.5, 10), "general=en": (4.0, 10)}}
    rows = run_sweep(model, tok, {"cusprun@0.1": plans["cusprun@0.1"]}, sets, grams=gs,
                     modes=["ls"], ridge=0.1, max_tokens=32, progress=False, known=known)
    got = {(r["method"], r["eval_set"]): (r["loss"], r["retention"]) for r in rows}
    assert got[("cusprun", "domain=health")] == (9.0, 0.5)
    assert got[("dense", "general=en")] == (4.0, 1.0)
    assert all(r["seconds"] == 0.0 for r in rows)   # nothing was measured


def test_table_and_plot(setup, tmp_path):
    model, tok, gs, plans, sets = setup
    rows = run_sweep(model, tok, plans, sets, grams=gs, modes=["ls", "none"], ridge=0.1,
                     max_tokens=32, progress=False)
    md = sweep_markdown(rows, ["domain=health"])
    assert md.startswith("## Retention vs pruning ratio")
    assert "| cusprun | 0.40 | ls |" in md and "| random | 0.40 | none |" in md
    assert md.count("**") >= 2 * 3          # a best method per (ratio, compensation) cell group
    path = plot_sweep(rows, tmp_path / "retention_vs_ratio.png", ["domain=health"])
    assert path.stat().st_size > 10_000
    assert sweep_markdown([], []) == "" and plot_sweep([], tmp_path / "x.png", []) is None


def test_bfloat16_sweep_measures_every_point_itself_close_to_float32(setup):
    model, tok, gs, plans, sets = setup
    fake = {("cusprun@0.1", "ls"): {"domain=health": (9.0, 10), "general=en": (8.0, 10)},
            ("dense", "none"): {"domain=health": (4.5, 10), "general=en": (4.0, 10)}}
    one = {"cusprun@0.1": plans["cusprun@0.1"]}
    f32 = run_sweep(model, tok, one, sets, grams=gs, modes=["ls"], ridge=0.1, max_tokens=32,
                    progress=False)
    b16 = run_sweep(model, tok, one, sets, grams=gs, modes=["ls"], ridge=0.1, max_tokens=32,
                    progress=False, known=fake, precision="bfloat16")
    assert {r["precision"] for r in f32} == {"float32"} and {r["precision"] for r in b16} == {"bfloat16"}
    # float32 numbers measured by the main comparison are not mixed into a bfloat16 table
    assert all(r["loss"] not in (9.0, 8.0, 4.5, 4.0) for r in b16)
    key = lambda r: (r["method"], r["eval_set"])  # noqa: E731
    ref = {key(r): r for r in f32}
    for r in b16:
        assert r["loss"] == pytest.approx(ref[key(r)]["loss"], rel=0.02)
        assert r["retention"] == pytest.approx(ref[key(r)]["retention"], abs=0.02)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert "measured in bfloat16" in sweep_markdown(b16, ["domain=health"])


def test_a_bf16_model_sweep_says_bfloat16_and_measures_every_point(setup):
    """Weights loaded in bf16 multiply in bf16: a 'float32' sweep on them must not say float32,
    nor mix in the float32 main comparison's numbers."""
    import copy

    model, tok, gs, plans, sets = setup
    one = {"cusprun@0.1": plans["cusprun@0.1"]}
    fake = {("cusprun@0.1", "none"): {"domain=health": (9.0, 10), "general=en": (8.0, 10)},
            ("dense", "none"): {"domain=health": (4.5, 10), "general=en": (4.0, 10)}}
    rows = run_sweep(copy.deepcopy(model).to(torch.bfloat16), tok, one, sets, grams=gs,
                     modes=["none"], ridge=0.1, max_tokens=32, progress=False, known=fake,
                     precision="float32")
    assert {r["precision"] for r in rows} == {"bfloat16"}
    assert all(r["loss"] not in (9.0, 8.0, 4.5, 4.0) for r in rows)


def test_points_measured_at_once_on_model_copies_give_the_same_rows(setup):
    model, tok, gs, plans, sets = setup
    before = [p.clone() for p in model.parameters()]
    kw = dict(grams=gs, modes=["ls", "none"], ridge=0.1, max_tokens=32, progress=False)
    one = run_sweep(model, tok, plans, sets, workers=1, **kw)
    two = run_sweep(model, tok, plans, sets, workers=2, **kw)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(two) == drop(one)            # same order, bit-identical losses
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_compensated_point_without_grams_is_refused_before_any_measurement(setup):
    model, tok, _, plans, sets = setup
    with pytest.raises(ValueError, match="cusprun@0.1 with compensation 'ls' needs Grams"):
        run_sweep(model, tok, plans, sets, grams=None, modes=["ls"], ridge=0.1, max_tokens=32,
                  progress=False, workers=2)


def test_a_gram_set_read_from_several_threads_reads_each_layer_once(setup, monkeypatch):
    """Four threads ask for layers at once. The first read waits until all four are inside
    layer(), so every request overlaps a read in progress (a real read takes a while:
    megabytes per layer); each layer is still read once and shared."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.support.wait import wait_until

    _, _, gs, _, _ = setup
    fresh = GramSet(gs.dirs)
    reads, entered = [], []
    real_read, real_layer = fresh._read, fresh.layer

    def layer(li):
        entered.append(threading.get_ident())
        return real_layer(li)

    def read(li):
        if not reads:
            wait_until(lambda: len(set(entered)) == 4, what="all four threads inside layer()",
                       timeout=60, every=0.001)
        reads.append(li)
        return real_read(li)

    monkeypatch.setattr(fresh, "_read", read)
    monkeypatch.setattr(fresh, "layer", layer)
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda i: fresh.layer(i % fresh.n_layers), range(4 * fresh.n_layers)))
    assert sorted(reads) == list(range(fresh.n_layers))
    assert all(got[i] is got[i % fresh.n_layers] for i in range(len(got)))


def test_a_plan_with_its_own_compensation_is_measured_under_it_and_without(setup):
    """flap brings FLAP's bias from general text: its compensated point is that, measured from
    the channel means it names, beside the others' 'ls'; the table bolds the best compensated
    method whatever its compensation."""
    from cusprun.compensation import ChannelMeans, CompensationConfig
    from cusprun.engine import MaskSession
    from cusprun.scoring import collect_stats

    model, tok, gs, plans, sets = setup
    general = collect_stats(model, tok, [t.upper() for t in TEXTS], max_tokens=32, progress=False)
    means = ChannelMeans.from_stats([general])
    flap = ("flap", 0.4, plans["random@0.4"][2])
    both = {"cusprun@0.4": plans["cusprun@0.4"], "flap@0.4": flap}
    rows = run_sweep(model, tok, both, sets, grams=gs, modes=["ls", "none"], ridge=0.1,
                     max_tokens=32, progress=False,
                     own={"flap@0.4": ({"mode": "bias", "ridge": 0.0}, means)})
    got = {(r["method"], r["compensation"], r["eval_set"]): r["loss"] for r in rows}
    assert {(m, c) for m, c, _ in got} == {("dense", "none"), ("cusprun", "ls"), ("cusprun", "none"),
                                           ("flap", "bias"), ("flap", "none")}
    session = MaskSession(model)
    session.apply(flap[2], grams=means, config=CompensationConfig(mode="bias"))
    want = heldout_loss(model, tok, sets["domain=health"], max_tokens=32, progress=False).loss
    session.restore()
    assert got[("flap", "bias", "domain=health")] == pytest.approx(want, rel=1e-5)
    md = sweep_markdown(rows, ["domain=health"])
    assert "| flap | 0.40 | bias |" in md
    assert sum("**" in line for line in md.splitlines() if "| 0.40 | none |" not in line
               and "| 0.40 |" in line) == 1      # one best among the compensated rows
