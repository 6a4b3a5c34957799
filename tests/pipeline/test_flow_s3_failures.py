"""The same S3 failure modes as tests/storage/test_s3_failure_modes.py, as a Prefect user meets them: the
build-expert flow run fails in its first task, check-inputs, with exactly the message the CLI
prints; transient failures are retried once by Prefect, permanent ones are not. Real Prefect
server, real moto server."""
from __future__ import annotations

import pytest

from tests.support.flow_helpers import failed_task, task_states, tiny_spec
from tests.support.network import closed_port, tcp_connects
from tests.support.s3_faults import FaultyEndpoint, iam_user, moto_iam_auth, no_aws_credentials

pytestmark = [pytest.mark.prefect, pytest.mark.s3]


MODES = ["no-credentials", "unknown-bucket", "access-denied", "unreachable", "slow"]


@pytest.fixture
def failure(request, s3_server, s3_bucket, monkeypatch, tmp_path):
    """(storage root, s3fs options, whether transient, attempts) for one failure mode, set up
    for real; attempts() counts the tries that reached the endpoint so far (transient modes)."""
    mode = request.param
    opts = dict(s3_bucket.storage_options)
    if mode == "no-credentials":
        no_aws_credentials(monkeypatch, tmp_path)
        yield s3_bucket.uri, opts, False, None
    elif mode == "unknown-bucket":
        yield "s3://cusprun-no-such-bucket/x", opts, False, None
    elif mode == "access-denied":
        nobody = iam_user(s3_server.endpoint_url, ["s3:ListBucket"], "some-other-bucket")
        with moto_iam_auth():
            yield s3_bucket.uri, {**opts, **nobody}, False, None
    elif mode == "unreachable":
        port = closed_port()
        with tcp_connects() as connects:
            yield (s3_bucket.uri, {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}},
                   True, lambda: connects.count(("127.0.0.1", port)))
    else:
        with FaultyEndpoint(s3_server.endpoint_url) as ep:
            ep.delay_s = 60   # far past the read timeout: every attempt times out
            yield s3_bucket.uri, {"client_kwargs": {"endpoint_url": ep.url},
                                  "config_kwargs": {"read_timeout": 0.5}}, True, lambda: ep.requests


@pytest.mark.parametrize("failure", MODES, indirect=True)
def test_flow_fails_in_check_inputs_with_the_cli_message(prefect_api, tiny_model, failure):
    from prefect.blocks.system import Secret

    from cusprun.errors import StorageError
    from cusprun.pipeline.preflight import check_inputs
    from flows.build import build_expert

    from cusprun.storage.store import CHECK_POLICY

    root, opts, transient, attempts = failure
    spec = tiny_spec(tiny_model, root)
    with pytest.raises(StorageError) as cli:     # what `cusprun build` prints after "error: "
        check_inputs(spec, opts)
    message = str(cli.value)
    assert root in message and "\n" not in message
    checked = attempts() if attempts else 0

    Secret(value=opts).save("cusprun-test-failure", overwrite=True)
    state = build_expert(spec=spec, storage_block="cusprun-test-failure", return_state=True)
    assert state.is_failed()
    assert message in state.message, state.message
    task = failed_task(state.state_details.flow_run_id, "check-inputs")
    assert message in task.state.message, task.state.message
    assert task.run_count == (2 if transient else 1)   # Prefect retries transient failures only
    # Bounded, so quick: the run stopped at its first task, and a transient failure cost one
    # try per attempt of the store's check policy per run of the task, no more.
    assert [n for n, _ in task_states(state)] == ["check-inputs"]
    if transient:
        assert checked == CHECK_POLICY.attempts
        assert attempts() - checked == task.run_count * CHECK_POLICY.attempts


def test_prefect_retries_only_what_could_pass_next_time():
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError
    from prefect.states import Failed

    from cusprun.errors import ModelSourceError, SpecError, StorageError
    from tasks.common import retry_if_transient

    def retried(exc: BaseException) -> bool:
        return retry_if_transient(None, None, Failed(data=exc))

    def caused(outer: BaseException, cause: BaseException) -> BaseException:
        outer.__cause__ = cause
        return outer

    assert retried(StorageError("endpoint down", transient=True))
    assert retried(caused(ModelSourceError("hub download cut"), ConnectionResetError()))
    assert retried(EndpointConnectionError(endpoint_url="http://h"))
    assert not retried(StorageError("bucket missing"))
    assert not retried(caused(StorageError("no credentials"), NoCredentialsError()))
    assert not retried(SpecError("bad ratio"))
    assert not retried(ZeroDivisionError("a bug"))
