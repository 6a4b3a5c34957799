"""The Prefect UI in a real browser: a Prefect server with its UI, `build-expert` deployed as
deployments/prefect.yaml says, a process worker on the cpu pool, and headless Chromium (Debian's
`chromium`, driven by Playwright) filling the deployment's run form (the ExpertSpec) for a tiny
model, submitting it, and finding the finished run's evaluation report among its artifacts.
Screenshots of the form, the finished run and the report are taken on every run; with
CUSPRUN_UPDATE_SCREENSHOTS=1 a passing run copies them to docs/ (shown in the README), so a plain
`make test` leaves the checkout clean.

Skipped where there is no browser; `make test` installs chromium and playwright first."""
from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.prefect_server import prefect_cli, start_prefect_server, start_worker, stop_process
from tests.support.wait import wait_until

DOCS = REPO / "docs"
CHROMIUM = os.environ.get("CUSPRUN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT_S = 480

pytestmark = [pytest.mark.browser, pytest.mark.prefect, pytest.mark.integration]
if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
    pytestmark.append(pytest.mark.skip(reason=f"no Chromium at {CHROMIUM} (make test installs "
                                              "Debian's chromium; CUSPRUN_CHROMIUM overrides)"))
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test does)")


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    """A Prefect server with its UI (the session's server runs without), build-expert deployed
    on the cpu pool, and a worker serving that pool."""
    home = tmp_path_factory.mktemp("prefect-ui")
    server, api = start_prefect_server(home, ui=True)
    worker = None
    try:
        prefect_cli(api, "work-pool", "create", "cpu", "--type", "process")
        prefect_cli(api, "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml",
                    "--name", "build-expert")
        worker = start_worker(api, "cpu", home / "worker.log")
        yield api
    finally:
        if worker is not None:
            stop_process(worker)
        stop_process(server)


def _get(api, path: str):
    with urllib.request.urlopen(f"{api.url}{path}", timeout=10) as r:
        return json.load(r)


def _post(api, path: str, body: dict):
    req = urllib.request.Request(f"{api.url}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def _prop(scope, label: str):
    """The form field (or group) labelled `label`, inside `scope`: the label is `label` alone or
    followed by a parenthesis (Prefect's "(Optional)"), so 'Evaluation' is not a dimension's
    'Evaluation sources'."""
    text = "normalize-space(.)"
    return scope.locator(
        "xpath=.//div[contains(concat(' ', normalize-space(@class), ' '), ' schema-form-property ')]"
        "[./div[contains(@class,'p-label__header')]//span[contains(@class,"
        f"'schema-form-property__label')][{text}='{label}' or starts-with({text}, '{label} (')]]"
    ).first


def _fill(scope, label: str, value) -> None:
    _prop(scope, label).locator("textarea, input").first.fill(str(value))


def _fill_spec_form(page, model: str, root: str) -> None:
    """A tiny build: the tiny model, few documents and tokens, one baseline, one other language."""
    from playwright.sync_api import expect

    spec = _prop(page, "spec")
    _fill(spec, "Name", "ui-expert")
    _fill(spec, "Base Model", model)
    for dim in ("Language", "Domain", "Task", "General"):
        _fill(_prop(spec, dim), "Max Docs", 16)
    baselines = _prop(spec, "Baselines")
    for name in ("random", "wanda-sp", "flap", "flap-score"):    # keep magnitude
        tag = baselines.locator("span.p-tag").filter(
            has_text=re.compile(rf"^\s*{re.escape(name)}\s*$"))
        tag.locator("button.p-tag__dismiss").click()
    expect(baselines.locator("span.p-tag")).to_have_count(1)
    _fill(spec, "Max Tokens", 48)       # the spec's own, before the evaluation's
    _fill(spec, "Min Docs", 4)
    evaluation = _prop(spec, "Evaluation")
    # keep 'de', delete 'fr' (an emptied list would count as unset, i.e. the default)
    items = _prop(evaluation, "Other Languages").locator(".schema-form-property-array-item")
    expect(items).to_have_count(2)
    items.nth(1).locator("button").first.click()    # its delete button
    expect(items).to_have_count(1)
    for label, value in (("Max Docs", 4), ("MC items", 4), ("Max Tokens", 48), ("Speed Iters", 1)):
        _fill(evaluation, label, value)
    _fill(spec, "Storage Root", root)


def _runs(api, deployment_id: str) -> list[dict]:
    return _post(api, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}}})


def _submit(page, api, deployment_id: str, shots: Path) -> None:
    """Click Submit until the server has the run. On a loaded machine a click can land before
    the form is ready and do nothing (seen once in a full `make test`: no run was created and
    the test waited out its timeout); a second click is then what a user would do."""
    for attempt in (1, 2):
        page.get_by_role("button", name="Submit").click()
        try:
            wait_until(lambda: _runs(api, deployment_id), what="the submitted flow run",
                       timeout=60, every=1)
            return
        except AssertionError:
            page.screenshot(path=shots / f"ui-submit-{attempt}-no-run.png")
    raise AssertionError("Submit created no flow run (screenshots: ui-submit-*-no-run.png)")


def _wait_for_run(api, deployment_id: str) -> dict:
    def finished():
        runs = _runs(api, deployment_id)
        if runs and runs[0]["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return runs[0]
        return None

    return wait_until(finished, what="the run to finish", timeout=RUN_TIMEOUT_S, every=2)


def test_run_build_expert_from_the_ui_form(ui_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from cusprun.storage import ArtifactStore, list_versions
    from tests.support import make_tiny_model

    _, model = make_tiny_model("LlamaForCausalLM", tmp_path / "tiny-llama")
    root = tmp_path / "artifacts"
    ui = ui_server.url.removesuffix("/api")
    deployment = _get(ui_server, "/deployments/name/build-expert/build-expert")
    shots = tmp_path / "shots"
    shots.mkdir()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1300, "height": 1000}).new_page()
            page.goto(f"{ui}/deployments/deployment/{deployment['id']}/run", wait_until="networkidle")
            _fill_spec_form(page, str(model), str(root))
            page.get_by_text("Run Name", exact=True).scroll_into_view_if_needed()
            page.screenshot(path=shots / "ui-run-form.png")
            _submit(page, ui_server, deployment["id"], shots)

            run = _wait_for_run(ui_server, deployment["id"])
            assert run["state"]["type"] == "COMPLETED", (
                run["state"], (ui_server.home / "worker.log").read_text()[-4000:])
            spec = run["parameters"]["spec"]      # what the form sent
            assert (spec["name"], spec["base_model"], spec["baselines"]) == (
                "ui-expert", str(model), ["magnitude"])
            assert spec["evaluation"]["other_languages"] == ["de"]
            assert spec["language"]["max_docs"] == 16 and spec["evaluation"]["mc_items"] == 4

            page.goto(f"{ui}/runs/flow-run/{run['id']}", wait_until="networkidle")
            expect(page.get_by_text("Completed").first).to_be_visible()
            page.get_by_text("Artifacts", exact=True).click()
            card = page.get_by_text("ui-expert-evaluation", exact=True)
            expect(card).to_be_visible()
            page.screenshot(path=shots / "ui-finished-run.png")
            card.click()
            expect(page.get_by_text(re.compile("Loss in nats/token")).first).to_be_visible()
            expect(page.get_by_text(re.compile(r"magnitude")).first).to_be_visible()
            page.screenshot(path=shots / "ui-report-artifact.png")
        finally:
            browser.close()

    assert list_versions(ArtifactStore(str(root)), "ui-expert")   # the expert was published
    assert {p.name for p in shots.iterdir()} >= {"ui-run-form.png", "ui-finished-run.png",
                                                 "ui-report-artifact.png"}
    if os.environ.get("CUSPRUN_UPDATE_SCREENSHOTS") == "1":   # only a passing run refreshes them
        for name in ("ui-run-form.png", "ui-finished-run.png", "ui-report-artifact.png"):
            shutil.copyfile(shots / name, DOCS / name)
