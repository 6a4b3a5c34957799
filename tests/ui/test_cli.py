"""Every subcommand answers --help; errors are one clear line, not a traceback."""
import argparse

import pytest

from cusprun.cli import build_parser, main


def _all_command_paths(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from _all_command_paths(sub, prefix + (name,))


def test_every_subcommand_has_help(capsys):
    paths = list(_all_command_paths(build_parser()))
    assert ("model", "summary") in paths
    for path in paths:
        with pytest.raises(SystemExit) as e:
            main([*path, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "usage: cusprun " + " ".join(path) in out


def test_user_error_is_one_line_and_exit_2(capsys):
    assert main(["model", "resolve", "not-an-alias"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown model alias 'not-an-alias'")


def test_build_flags_override_the_spec():
    from cusprun.cli.pipeline import _spec_from_args

    args = build_parser().parse_args(["build", "--ratio", "0.3", "--layout", "per_layer",
                                      "--ffn-multiple", "64", "--domain", "none", "--baselines", "random",
                                      "--protect-fraction", "0.3"])
    spec = _spec_from_args(args)
    assert (spec.target_ratios, spec.layout, spec.ffn_multiple) == ([0.3], "per_layer", 64)
    assert spec.protect_fraction == 0.3
    assert spec.domain is None and spec.baselines == ["random"]
    args = build_parser().parse_args(["build", "--base-model", "gemma3-270m", "--language", "es",
                                      "--domain", "none", "--task", "none", "--general", "none",
                                      "--baselines", "", "--no-evaluation"])
    spec = _spec_from_args(args)
    assert spec.general is None and spec.evaluation.enabled is False and spec.baselines == []
    assert list(spec.dimensions()) == ["language"] and spec.language.value == "es"
    with pytest.raises(Exception, match="ffn_multiple"):
        _spec_from_args(build_parser().parse_args(["build", "--ffn-multiple", "0"]))
    with pytest.raises(Exception, match="protect_fraction"):
        _spec_from_args(build_parser().parse_args(["build", "--protect-fraction", "1"]))


def test_demo_runs_the_quick_english_default_full_or_a_profile():
    from cusprun.cli.demo import demo_spec
    from cusprun.pipeline.demo import FULL_DEMO_SPEC, recorded_baseline
    from cusprun.pipeline.plan_inputs import calibration_corpora

    quick = demo_spec(build_parser().parse_args(["demo"]))
    full = demo_spec(build_parser().parse_args(["demo", "--full"]))
    assert quick.base_model == FULL_DEMO_SPEC["base_model"] == "smollm2-135m"
    assert quick.baselines == [recorded_baseline()["baseline"]] and quick.evaluation.sweep_ratios == []
    assert min(quick.evaluation.max_docs, full.evaluation.max_docs) >= 32   # intervals' coverage
    assert set(full.baselines) == {"random", "magnitude", "wanda-sp", "flap", "flap-score"}
    assert full.evaluation.sweep_ratios
    # One calibration for both: the full demo reuses the quick one's statistics and plan.
    assert calibration_corpora(quick) == calibration_corpora(full)
    assert quick.model_dump(exclude={"baselines", "evaluation"}) == full.model_dump(
        exclude={"baselines", "evaluation"})
    spec = demo_spec(build_parser().parse_args(["demo", "--profile", "fr-health-qa",
                                                "--storage-root", "/tmp/x"]))
    assert (spec.name, spec.base_model, spec.language.value) == ("fr-health-qa", "gemma3-270m", "fr")
    assert spec.storage_root == "/tmp/x" and spec.evaluation.mc_items >= 100
    assert main(["demo", "--profile", "no-such-profile"]) == 2


def test_generate_takes_the_prompt_as_an_argument(capsys):
    args = build_parser().parse_args(["model", "generate", "gemma3-270m", "La capitale de la France est"])
    assert (args.model, args.text) == ("gemma3-270m", "La capitale de la France est")
    assert main(["model", "generate", "smollm2-135m", ""]) == 2
    assert "Empty prompt" in capsys.readouterr().err


def test_model_card_license_of_embedded_models():
    from cusprun.models.embedded import license_card

    card = license_card("gemma")
    assert card["license"] == "gemma" and "Gemma Terms of Use" in card["description"]
    assert license_card(None) == {}


def test_build_result_prints_the_report_when_the_root_is_a_symbolic_link(tmp_path, capsys):
    """`ln -s /data/artifacts artifacts`: Prefect's result cache may hand back the report URI of
    an earlier build that named the store by its real path; the summary still finds the report."""
    from cusprun.cli.pipeline import _print_result
    from cusprun.pipeline.artifacts import commit
    from cusprun.pipeline.spec import ExpertSpec
    from cusprun.storage import ArtifactStore

    real = tmp_path / "data" / "artifacts"
    real.mkdir(parents=True)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "artifacts").symlink_to(real, target_is_directory=True)
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# Evaluation of the linked store\n")
    record = commit(ArtifactStore(real), report, "reports/abc123", {})
    result = {"report": record["uri"], "wall_s": 1.0,
              "expert": {"name": "x", "version": "v1", "uri": str(real / "experts/x/v1")}}
    spec = ExpertSpec(storage_root=str(tmp_path / "work" / "artifacts"))
    _print_result(spec, result)
    assert "# Evaluation of the linked store" in capsys.readouterr().out


def test_a_build_ends_with_its_stage_timings(capsys):
    from cusprun.cli.pipeline import print_timings
    from flows.build import stage_timings

    rows = stage_timings([("corpora", {"task_s": 1.0, "reused": True}),
                          ("corpora", {"task_s": 2.5}), ("statistics", {"task_s": 40.2}),
                          ("plan cusprun@0.25", {"task_s": 9.0}), ("plan flap@0.25", {"reused": True}),
                          ("plan flap@0.1", {"reused": True}), ("publish", {"task_s": 1.2})])
    assert [r["stage"] for r in rows] == ["corpora", "statistics", "plan cusprun@0.25",
                                          "baseline plans", "publish"]
    print_timings({"timings": rows, "wall_s": 60.0})
    out = capsys.readouterr().out
    assert "corpora" in out and "2.5s  (1 of 2 reused)" in out and "baseline plans" in out
    assert out.strip().splitlines()[-1] == "wall time: 60.0s" and "reused\n" in out
