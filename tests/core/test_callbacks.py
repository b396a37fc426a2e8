"""Callbacks against a real HTTP receiver: the URL check, the signed report of a success and of a failure,
retries on 5xx, no retry on 4xx, an unreachable receiver, one report per run."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.conftest import make_settings, seed_project
from tests.support.receiver import SECRET, dead_url, receiving
from training_agent.core.callbacks import (
    DELIVERY_HEADER,
    CallbackRefused,
    CallbackSender,
    check_callback_url,
)
from training_agent.core.lease import claim_project, fail_run, run_id_of
from training_agent.core.records import NewModel, RecordsStore, open_records
from training_agent.core.settings import Settings

METRICS = {"test_accuracy": 0.91, "val_accuracy": 0.93, "best_epoch": 2, "epochs_run": 3}


def callback_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "callback_allowed_hosts": "127.0.0.1, *.example.com",
        "callback_secret": SECRET,
        "callback_attempts": 3,
        "callback_backoff_seconds": 0.05,
        "callback_timeout_seconds": 2,
    }
    return make_settings(tmp_path, **{**values, **overrides})


@pytest.fixture
def cb_settings(tmp_path: Path) -> Settings:
    return callback_settings(tmp_path)


@pytest.fixture
def cb_records(cb_settings: Settings) -> RecordsStore:
    return open_records(cb_settings)


@pytest.fixture
def sender(cb_settings: Settings, cb_records: RecordsStore) -> Iterator[CallbackSender]:
    sender = CallbackSender(cb_settings, cb_records)
    yield sender
    sender.close()


def started(records: RecordsStore, url: str) -> UUID:
    project = seed_project(records, "gs://bucket/d.zip", name="Flowers")
    assert claim_project(records, project.id, "local", callback_url=url) is not None
    return project.id


def succeed(records: RecordsStore, project_id: UUID) -> None:
    history = [{"epoch": 1, "train_loss": 0.5}]
    records.insert_model(
        NewModel(
            project_id=project_id,
            name="Flowers_model",
            gcs_url="gs://b/models/Flowers_model.pth",
            metadata={**METRICS, "history": history, "test_metrics": {"confusion_matrix": [[1]]}},
        )
    )
    records.transition_project(project_id, from_status="training", to_status="pending_evaluation")


def warnings(records: RecordsStore, project_id: UUID) -> list[str]:
    return [r.message for r in records.recent_logs(project_id) if r.log_level == "warning"]


# -- the URL, at the start ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "url", "says"),
    [
        ({"callback_allowed_hosts": ""}, "https://a.example.com/x", "TRAINING_AGENT_CALLBACK_ALLOWED_HOSTS"),
        ({"callback_secret": ""}, "https://a.example.com/x", "TRAINING_AGENT_CALLBACK_SECRET"),
        ({}, "ftp://a.example.com/x", "must be an http or https URL"),
        ({}, "https:///no-host", "must be an http or https URL with a host"),
        ({}, "https://a.example.com:99999/x", "must be an http or https URL"),
        ({}, "https://user:pw@a.example.com/x", "must not carry a user name or password"),
        ({}, "https://evil.com/x", "host 'evil.com' is not allowed by TRAINING_AGENT_CALLBACK_ALLOWED_HOSTS"),
        ({}, "https://example.com.evil.com/x", "is not allowed"),
    ],
)
def test_refused_urls_say_why_in_one_sentence(
    tmp_path: Path, overrides: dict[str, Any], url: str, says: str
) -> None:
    with pytest.raises(CallbackRefused) as refused:
        check_callback_url(url, callback_settings(tmp_path, **overrides))
    message = str(refused.value)
    assert says in message
    assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "https://hooks.example.com/a?b=c", "https://A.B.EXAMPLE.COM/"]
)
def test_allowed_urls(cb_settings: Settings, url: str) -> None:
    assert check_callback_url(url, cb_settings) == url


# -- the report ----------------------------------------------------------------------------------------------
def test_success_is_reported_signed_with_the_model_and_its_metrics(
    sender: CallbackSender, cb_records: RecordsStore
) -> None:
    with receiving() as receiver:
        project_id = started(cb_records, receiver.url)
        succeed(cb_records, project_id)
        sender.run_ended(project_id)
        [request] = receiver.wait_for(1)
    assert receiver.signed(request)
    assert request.path == "/hooks/training?token=t0k3n"
    assert request.headers["content-type"] == "application/json"
    project = cb_records.get_project(project_id)
    assert project is not None
    assert request.payload == {
        "project_id": str(project_id),
        "run_id": run_id_of(project),
        "status": "pending_evaluation",
        "model_url": "gs://b/models/Flowers_model.pth",
        "metrics": METRICS,  # the headline numbers; not the history or the per-class report
        "error": None,
    }


def test_failure_is_reported_with_the_error_but_not_its_traceback(
    sender: CallbackSender, cb_settings: Settings, cb_records: RecordsStore
) -> None:
    with receiving() as receiver:
        project_id = started(cb_records, receiver.url)
        assert fail_run(
            cb_records, project_id, "Out of memory", agent_name="ta", step="fit", error_type="OOM"
        )
        sender.run_ended(project_id)
        [request] = receiver.wait_for(1)
    assert receiver.signed(request)
    payload = request.payload
    assert (payload["status"], payload["model_url"], payload["metrics"]) == ("failed", None, None)
    assert payload["error"]["message"] == "Out of memory"
    assert (payload["error"]["type"], payload["error"]["step"]) == ("OOM", "fit")
    assert "traceback" not in payload["error"]


def test_a_tampered_body_or_an_old_timestamp_does_not_verify(
    sender: CallbackSender, cb_records: RecordsStore
) -> None:
    """The receiver's check can fail: the signature covers the body and the timestamp."""
    from tests.support.receiver import verify

    with receiving() as receiver:
        project_id = started(cb_records, receiver.url)
        succeed(cb_records, project_id)
        sender.run_ended(project_id)
        [request] = receiver.wait_for(1)
    assert verify(SECRET, request.headers, request.body)
    assert not verify(SECRET, request.headers, request.body.replace(b"pending_evaluation", b"failed"))
    assert not verify("another secret", request.headers, request.body)
    old = {**request.headers, "x-training-agent-timestamp": str(int(time.time()) - 3600)}
    assert not verify(SECRET, old, request.body)


def test_a_5xx_is_tried_again_then_delivered(sender: CallbackSender, cb_records: RecordsStore) -> None:
    with receiving(answers=[500, 503]) as receiver:
        project_id = started(cb_records, receiver.url)
        succeed(cb_records, project_id)
        sender.run_ended(project_id)
        requests = receiver.wait_for(3)
        assert sender.join(5)
    assert [r.answered for r in requests] == [500, 503, 200]
    assert all(receiver.signed(r) for r in requests)
    # One delivery, tried three times: the receiver can tell a retry from a second report.
    assert len({r.headers[DELIVERY_HEADER.lower()] for r in requests}) == 1
    assert warnings(cb_records, project_id) == []


def test_attempts_are_bounded_and_the_failure_is_an_agent_logs_warning(
    sender: CallbackSender, cb_records: RecordsStore
) -> None:
    with receiving(answers=[502, 502, 502, 502]) as receiver:
        project_id = started(cb_records, receiver.url)
        succeed(cb_records, project_id)
        sender.run_ended(project_id)
        assert sender.join(10)
        assert len(receiver.received) == 3  # TRAINING_AGENT_CALLBACK_ATTEMPTS
        base = receiver.url.split("?")[0]
    # The URL without its query, which may carry the receiver's token.
    assert warnings(cb_records, project_id) == [f"Callback to {base} failed after 3 attempt(s): HTTP 502"]


def test_a_4xx_is_final(sender: CallbackSender, cb_records: RecordsStore) -> None:
    with receiving(answers=[401]) as receiver:
        project_id = started(cb_records, receiver.url)
        succeed(cb_records, project_id)
        sender.run_ended(project_id)
        assert sender.join(10)
        assert len(receiver.received) == 1
    assert warnings(cb_records, project_id)[0].endswith("failed after 1 attempt(s): HTTP 401")


def test_an_unreachable_receiver_costs_the_caller_nothing(tmp_path: Path, cb_records: RecordsStore) -> None:
    settings = callback_settings(tmp_path, callback_attempts=3, callback_backoff_seconds=0.2)
    sender = CallbackSender(settings, cb_records)
    project_id = started(cb_records, dead_url())
    succeed(cb_records, project_id)
    began = time.monotonic()
    sender.run_ended(project_id)
    assert time.monotonic() - began < 0.1  # the report is queued; the tries run on the sender's thread
    assert warnings(cb_records, project_id) == []  # still trying (0.2 s, then 0.4 s of backoff)
    assert sender.join(20)
    sender.close()
    [warning] = warnings(cb_records, project_id)
    assert "failed after 3 attempt(s): ConnectError" in warning


def test_one_report_per_run_and_none_for_an_older_run(
    sender: CallbackSender, cb_records: RecordsStore
) -> None:
    with receiving() as receiver:
        project_id = started(cb_records, receiver.url)
        succeed(cb_records, project_id)
        sender.run_ended(project_id)
        sender.run_ended(project_id)  # the executor and the reaper both saw it end
        sender.run_ended(project_id, "an-older-run-id")  # a late report of a run that is not the latest
        assert sender.join(10)
        assert len(receiver.received) == 1


def test_no_callback_url_no_request(sender: CallbackSender, cb_records: RecordsStore) -> None:
    project = seed_project(cb_records, "gs://bucket/d.zip")
    claim_project(cb_records, project.id, "local")
    fail_run(cb_records, project.id, "boom", agent_name="ta")
    sender.run_ended(project.id)
    assert sender.join(5)
    assert warnings(cb_records, project.id) == []


def test_a_host_no_longer_allowed_is_not_called(tmp_path: Path, cb_records: RecordsStore) -> None:
    """The process that reports (the controller) checks the URL against its own settings too."""
    narrower = callback_settings(tmp_path, callback_allowed_hosts="hooks.example.com")
    sender = CallbackSender(narrower, cb_records)
    with receiving() as receiver:
        project_id = started(cb_records, receiver.url)
        succeed(cb_records, project_id)
        sender.run_ended(project_id)
        assert sender.join(5)
        sender.close()
        assert receiver.received == []
    [warning] = warnings(cb_records, project_id)
    assert "not sent: callback_url host '127.0.0.1' is not allowed" in warning


def test_the_readmes_receiver_example_verifies_a_real_report(
    sender: CallbackSender, cb_records: RecordsStore
) -> None:
    """The README's Python example, run as written, against what the sender really sent."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## Callbacks") :]
    code = section[
        section.index("```python") + len("```python") : section.index("```", section.index("```python") + 9)
    ]
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(code), namespace)  # the documentation's own example
    with receiving() as receiver:
        project_id = started(cb_records, receiver.url)
        succeed(cb_records, project_id)
        sender.run_ended(project_id)
        [request] = receiver.wait_for(1)
    names = ("X-Training-Agent-Timestamp", "X-Training-Agent-Signature")
    headers = {name: request.headers[name.lower()] for name in names}
    assert namespace["verified"](SECRET.encode(), headers, request.body)
    assert not namespace["verified"](b"wrong", headers, request.body)
