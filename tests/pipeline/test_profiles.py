"""Customer profiles: every shipped profile is a valid ExpertSpec whose bundled corpora exist;
bad profiles and unknown names fail with messages that say what would be accepted."""
from __future__ import annotations

import pytest

from cusprun.errors import SpecError
from cusprun.pipeline.profiles import (check_bundled_corpora, list_profiles, load_profile,
                                       load_profiles, profiles_dir, validate_profiles)
from cusprun.pipeline.spec import ExpertSpec

SHIPPED = {"en-health-qa", "fr-health-qa", "fr-science-summarization", "py-code-completion"}


def test_shipped_profiles_are_valid_expert_specs_with_schedules():
    profiles = validate_profiles()
    assert SHIPPED <= {p.name for p in profiles}
    for p in profiles:
        assert isinstance(p.spec, ExpertSpec) and p.spec.name == p.name
        assert p.schedule is not None and len(p.schedule.cron.split()) == 5
        assert p.deployment == f"build-expert/{p.name}"
        assert check_bundled_corpora(p) == []
    fr = load_profile("fr-science-summarization")
    assert (fr.spec.language.value, fr.spec.domain.value, fr.spec.task.value) == ("fr", "science", "summarization")
    assert fr.schedule.timezone == "Europe/Paris"
    code = load_profile("py-code-completion")
    assert (code.spec.domain.value, code.spec.task.value) == ("code", "code-completion")


def test_french_health_profile_runs_on_gemma_with_enough_mc_items():
    from cusprun.pipeline.plan_inputs import calibration_corpora, evaluation_corpora

    p = load_profile("fr-health-qa")
    s = p.spec
    assert s.base_model == "gemma3-270m" and s.target_ratios == [0.25]
    assert (s.language.value, s.domain.value, s.task.value, s.general.value) == ("fr", "health", "qa", "fr")
    assert s.baselines == ["random", "magnitude", "wanda-sp", "flap"]
    assert s.evaluation.mc_items >= 100 and p.schedule.timezone == "Europe/Paris"
    calib = {g: [c["source"] for c in cs] for g, cs in calibration_corpora(s).items()}
    assert calib == {"language": ["bundled://language/fr"],
                     "domain": ["bundled://domain/health?lang=fr"],
                     "task": ["bundled://task/qa?domain=health&lang=fr"],
                     "general": ["bundled://general/fr"]}
    assert set(evaluation_corpora(s)) >= {"language=fr", "domain=health", "task=qa", "general=fr",
                                          "language=en", "language=es"}
    # held-out pools large enough for min_loss_tokens of short documents (16+ tokens each)
    assert {c["max_eval_docs"] for c in evaluation_corpora(s).values()} == {
        max(s.evaluation.mc_items, s.evaluation.min_loss_tokens // 16)}
    exact = s.model_copy(update={"evaluation": s.evaluation.model_copy(update={"min_loss_tokens": 0})})
    assert {c["max_eval_docs"] for c in evaluation_corpora(exact).values()} == {
        max(s.evaluation.max_docs, s.evaluation.mc_items)}


def test_unknown_profile_lists_the_existing_ones():
    with pytest.raises(SpecError) as e:
        load_profile("de-law-qa")
    msg = str(e.value)
    assert "de-law-qa" in msg and all(name in msg for name in SHIPPED)
    with pytest.raises(SpecError, match="de-law-qa"):
        load_profiles(["en-health-qa", "de-law-qa"])


def test_directory_from_argument_and_environment(tmp_path, monkeypatch):
    (tmp_path / "acme.yaml").write_text("language: {value: de}\ndomain: null\ntask: null\n"
                                        "schedule: {cron: '15 6 * * *', timezone: Europe/Berlin}\n")
    assert list_profiles(tmp_path) == ["acme"]
    monkeypatch.setenv("CUSPRUN_PROFILES", str(tmp_path))
    assert profiles_dir() == tmp_path
    p = load_profile("acme")
    assert p.spec.name == "acme" and p.spec.language.value == "de" and p.spec.domain is None
    with pytest.raises(SpecError, match="does not exist"):
        list_profiles(tmp_path / "missing")


@pytest.mark.parametrize("text, expected", [
    ("target_ratios: [1.5]\n", "target ratio 1.5"),
    ("language: {value: en}\ncolour: blue\n", "colour"),
    ("name: other-name\n", "drop `name` or rename"),
    ("schedule: {cron: 'every monday'}\n", "5 fields"),
    ("schedule: {cron: '0 3 * * 1', timezone: Mars/Olympus}\n", "IANA"),
    ("- just\n- a list\n", "YAML mapping"),
])
def test_invalid_profiles_say_what_is_wrong(tmp_path, text, expected):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(SpecError, match=expected):
        load_profile("bad", tmp_path)


def test_reserved_names_and_unavailable_bundled_corpora(tmp_path):
    (tmp_path / "collect-stats.yaml").write_text("{}\n")
    with pytest.raises(SpecError, match="reserved"):
        load_profile("collect-stats", tmp_path)
    (tmp_path / "collect-stats.yaml").unlink()
    (tmp_path / "cooking.yaml").write_text("language: {value: en}\ndomain: {value: cooking}\ntask: null\n")
    with pytest.raises(SpecError, match="cooking.*available: .*health"):
        validate_profiles(tmp_path)


def test_customer_profiles_rebuild_nightly():
    """The orchestration issue asks for a nightly cron per customer deployment."""
    from cusprun.pipeline.profiles import load_profiles

    for p in load_profiles():
        minute, hour, dom, month, dow = p.schedule.cron.split()
        assert (dom, month, dow) == ("*", "*", "*"), (p.name, p.schedule.cron)
        assert minute.isdigit() and hour.isdigit() and p.schedule.timezone
