"""docs/bad-inputs.md is a test: every row's command, run in an empty directory holding what the
row's Given column describes, must exit with status 2, print no traceback, and end with exactly
the row's error line. Adding a row to the document adds a test; changing a message without the
document fails here."""
from __future__ import annotations

import contextlib
import io
import re
import shlex
from typing import NamedTuple

import pytest

from tests.support.network import closed_port
from tests.support.paths import REPO, render_script
from tests.support.s3_faults import iam_user, moto_iam_auth, no_aws_credentials

DOC = REPO / "docs" / "bad-inputs.md"
S3_MARKERS = ("$S3", "$BUCKET", "$DEAD", "AWS")


class Row(NamedTuple):
    n: int
    area: str
    given: str
    command: str
    error: str


def _code(cell: str) -> str:
    """The text of a markdown code span (`x`, or ``x`` when x holds a backtick)."""
    cell = cell.strip()
    if cell.startswith("``"):
        return cell[2:-2].strip()
    assert cell.startswith("`") and cell.endswith("`"), cell
    return cell[1:-1]


def catalogue() -> list[Row]:
    rows = []
    for line in DOC.read_text().splitlines():
        if not re.match(r"^\| \d+ \|", line):
            continue
        cells = [c.strip() for c in line.strip()[1:-1].split("|")]
        assert len(cells) == 5, f"row needs 5 cells: {line}"
        rows.append(Row(int(cells[0]), cells[1], cells[2], _code(cells[3]), _code(cells[4])))
    return rows


ROWS = catalogue()


def test_the_catalogue_is_complete():
    assert len(ROWS) >= 30
    assert [r.n for r in ROWS] == list(range(1, len(ROWS) + 1))
    areas = {r.area for r in ROWS}
    assert {"CLI", "Spec YAML", "Profiles", "Model sources", "Corpora", "Storage",
            "Deployments"} <= areas, areas
    assert len({r.command + r.given for r in ROWS}) == len(ROWS), "duplicate rows"


# ---- Given: files, and a few situations ---------------------------------------------------

FILE = re.compile(r"`([^`]+)` = (?:`([^`]*)`|\(empty\))")


@contextlib.contextmanager
def _situation(text: str, monkeypatch, tmp_path, s3):
    """The situations the Given column names besides files."""
    if text == "no AWS credentials":
        no_aws_credentials(monkeypatch, tmp_path)
        yield
    elif text in ("the AWS keys of a user with no rights on the bucket",
                  "the AWS keys of a user who may only read the bucket"):
        server, bucket = s3
        allowed = (["s3:ListBucket"], "some-other-bucket") if "no rights" in text else (
            ["s3:ListBucket", "s3:HeadBucket", "s3:GetObject"], bucket.bucket)
        keys = iam_user(server.endpoint_url, *allowed)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["key"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys["secret"])
        with moto_iam_auth():
            yield
    else:
        raise AssertionError(f"docs/bad-inputs.md names a Given this test does not know: {text!r}")


def _run(argv: list[str]) -> tuple[int, str, str]:
    """Run `cusprun ...` or `python deployments/render.py ...` in this process."""
    from cusprun.cli import main

    if argv[:2] == ["python", "deployments/render.py"]:
        entry, args = render_script().main, argv[2:]
    else:
        assert argv[0] == "cusprun", argv
        entry, args = main, argv[1:]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = entry(args)
        except SystemExit as e:   # argparse
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _param(row: Row):
    marks = [pytest.mark.s3] if any(m in row.command + row.given for m in S3_MARKERS) else []
    return pytest.param(row, id=f"{row.n}-{row.area.lower().replace(' ', '-')}", marks=marks)


@pytest.mark.parametrize("row", [_param(r) for r in ROWS])
def test_bad_input_gives_the_documented_error(row: Row, tmp_path, monkeypatch, request):
    import cusprun.cli.pipeline as cli_pipeline

    def never(*_a, **_k):
        raise AssertionError(f"row {row.n} got past the input checks and would start a build")
    monkeypatch.setattr(cli_pipeline, "_prefect_defaults", never)
    monkeypatch.chdir(tmp_path)
    subst = {"$PWD": str(tmp_path)}
    s3 = None
    if any(m in row.command + row.given for m in S3_MARKERS):
        server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
        s3 = (server, bucket)
        subst.update({"$S3": server.endpoint_url, "$BUCKET": bucket.bucket,
                      "$DEAD": f"http://127.0.0.1:{closed_port()}"})

    def fill(text: str) -> str:
        for k, v in subst.items():
            text = text.replace(k, v)
        return text

    situations = []
    for item in [g.strip() for g in row.given.split("; ") if g.strip()]:
        m = FILE.fullmatch(item)
        if m:
            path = tmp_path / m.group(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text((m.group(2) or "").replace("\\n", "\n"))
        else:
            situations.append(item)

    argv = shlex.split(fill(row.command))
    while re.fullmatch(r"[A-Z_]+=.*", argv[0]):
        name, value = argv.pop(0).split("=", 1)
        monkeypatch.setenv(name, value)
    with contextlib.ExitStack() as stack:
        for s in situations:
            stack.enter_context(_situation(s, monkeypatch, tmp_path, s3))
        code, out, err = _run(argv)

    assert "Traceback" not in out + err
    assert code == 2, (code, err)
    assert err.strip().splitlines()[-1] == fill(row.error)
    if err.startswith("error: "):
        assert len(err.strip().splitlines()) == 1, err   # cusprun's own errors: one line
