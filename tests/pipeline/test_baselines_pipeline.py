"""Each baseline's own setup in a build's work list: flap's plan, slice and sweep points carry
FLAP's layout and bias compensation from the general text's channel means (or say that the family
cannot take it), the other baselines the build's; the setup is in the plan and slice keys."""
from __future__ import annotations

from cusprun.pipeline.runtime import Runtime
from cusprun.pipeline.spec import load_spec
from cusprun.pipeline.worklist import plan_work

CPU = Runtime(device="cpu", dtype="float32", gram_precision="float32", probe_precision="float32",
              sweep_precision="float32")


def _corpus(dim: str, value: str, h: str) -> dict:
    return {"key": f"corpus/{h}", "hash": h, "dimension": dim, "value": value,
            "source": f"bundled://{dim}/{value}", "file": "corpus.parquet"}


CORPORA = {"language": [_corpus("language", "en", "c1")], "domain": [_corpus("domain", "health", "c2")],
           "general": [_corpus("general", "en", "c4")]}
EVAL = {"language=en": _corpus("language", "en", "e1")}


def _work(arch: str = "LlamaForCausalLM", **spec):
    spec = load_spec({"baselines": ["wanda-sp", "flap", "flap-score"],
                      "evaluation": {"sweep_ratios": [0.25]}, **spec})
    model = {"ref": "m", "fingerprint": "fp0123456789abcdef", "architecture": arch}
    return plan_work(spec, model, CORPORA, EVAL, CPU)


def test_flap_slices_and_sweeps_with_its_bias_from_general_text():
    wl = _work()
    general = [s.stats.key for s in wl.statistics if s.group == "general"]
    grams = [g.key for g in wl.grams]
    flap = wl.slices[("flap", 0.25)].inputs
    assert flap["compensation"] == {"mode": "bias", "ridge": 0.0}
    assert flap["grams"] == [] and flap["means"] == general
    for m in ("cusprun", "wanda-sp", "flap-score"):
        inputs = wl.slices[(m, 0.25)].inputs
        assert inputs["compensation"] == {"mode": "ls", "ridge": 0.1}
        assert inputs["grams"] == grams and "means" not in inputs
    sweep = wl.evaluation.inputs["sweep"]
    assert sweep["flap@0.25"]["means"] == general and sweep["flap@0.25"]["compensation"]["mode"] == "bias"
    assert sweep["wanda-sp@0.25"]["compensation"]["mode"] == "ls"
    assert wl.plans[("flap", 0.25)].inputs["compensation"] == "ls"   # the build's; flap overrides


def test_a_family_without_output_biases_runs_flap_without_them():
    wl = _work("MistralForCausalLM")
    flap = wl.slices[("flap", 0.25)].inputs
    assert flap["compensation"]["mode"] == "none" and flap["grams"] == [] and "means" not in flap
    assert wl.evaluation.inputs["sweep"]["flap@0.25"]["compensation"]["mode"] == "none"


def test_each_baselines_own_setup_is_in_its_plan_and_slice_keys():
    base, other = _work(), _work(compensation="none", layout="per_layer", ffn_multiple=64)
    for m in ("wanda-sp", "flap-score"):      # follow the build
        assert base.plans[(m, 0.25)].key != other.plans[(m, 0.25)].key
    # flap's setup is its own: the build's layout, alignment and compensation change nothing
    assert base.plans[("flap", 0.25)].key == other.plans[("flap", 0.25)].key
    assert base.slices[("flap", 0.25)].key == other.slices[("flap", 0.25)].key
    mistral = _work("MistralForCausalLM")
    assert mistral.plans[("flap", 0.25)].key != base.plans[("flap", 0.25)].key
    assert mistral.slices[("flap", 0.25)].key != base.slices[("flap", 0.25)].key
    assert mistral.plans[("wanda-sp", 0.25)].key == base.plans[("wanda-sp", 0.25)].key
