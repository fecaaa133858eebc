"""How one analysis's requests are made, against a real local HTTP endpoint (FakeLLM, not a
mock): one ledger entry per request whatever mix of format fallbacks and retries it took, the
budget checked before each, and one ``openai`` client (one keep-alive connection) per analyst,
closed by ``close()`` or at the end of a ``with`` block."""

from __future__ import annotations

import time

import optuna
import pytest
from test_sampler_helpers import GOOD, SPACE, FakeLLM, make_study, quadratic

from hpo.sampler.history import History, from_study
from hpo.sampler.ledger import Ledger
from hpo.sampler.llm import LLMAnalyst, LLMFailure
from hpo.sampler.llm_request import _FORMAT_MEMO
from hpo.sampler.settings import LLMConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fake(request, monkeypatch):
    server = FakeLLM(request.param)
    monkeypatch.delitem(_FORMAT_MEMO, server.url, raising=False)  # (a port used before)
    yield server
    server.close()


@pytest.fixture
def study(tmp_path) -> optuna.Study:
    study = make_study(f"sqlite:///{tmp_path / 'r.db'}", every_n_trials=100)
    study.optimize(quadratic, n_trials=4)
    return study


def history(study: optuna.Study) -> History:
    return from_study(study, {n: {"type": p.type, **p.model_dump(exclude_defaults=True)}
                              for n, p in SPACE.params.items()})


def analyst(study: optuna.Study, url: str, sleeps: list[float], **llm) -> LLMAnalyst:
    cfg = LLMConfig(**{"base_url": url, "model": "fake-model", "timeout": 60.0,
                       "max_retries": 2, "backoff": 0.25, **llm})
    return LLMAnalyst(cfg, Ledger(study), sleep=sleeps.append)


def requests_made(study: optuna.Study) -> list[tuple]:
    """(outcome, attempt, response_format, format_rejected) of each ledger entry."""
    return [(e["outcome"], e.get("attempt"), e.get("response_format"),
             e.get("format_rejected", False)) for e in Ledger(study).entries()]


def formats_sent(fake: FakeLLM) -> list[str | None]:
    return [(r["body"].get("response_format") or {}).get("type") for r in fake.requests]


@pytest.mark.parametrize("fake", [[("llamacpp", GOOD), ("status", 503), ("ok", GOOD)]],
                         indirect=True)
def test_format_fallback_then_retry_is_one_ledger_entry_per_request(study, fake):
    sleeps: list[float] = []
    with analyst(study, fake.url, sleeps) as llm:
        reply, ids = llm.analyse(history(study), "every_n-0001")
    assert reply.proposals and formats_sent(fake) == ["json_schema", "json_object", "json_object"]
    assert requests_made(study) == [
        ("http_500", 1, "json_schema", True),  # rejected format: the next one, same attempt
        ("http_500", 1, "json_object", False),  # transient: retried after the backoff
        ("ok", 2, "json_object", False)]
    assert ids == [e["id"] for e in Ledger(study).entries()]
    assert sleeps == [0.25]  # one retry; the format probe waited for nothing
    assert _FORMAT_MEMO[fake.url] == "json_object"
    assert Ledger(study).usage()["calls"] == 3


@pytest.mark.parametrize("fake", [[("status", 503), ("llamacpp", GOOD)]], indirect=True)
def test_retry_then_format_fallback_keeps_the_attempt_number(study, fake):
    sleeps: list[float] = []
    with analyst(study, fake.url, sleeps) as llm:
        llm.analyse(history(study))
    assert formats_sent(fake) == ["json_schema", "json_schema", "json_object"]
    assert requests_made(study) == [("http_500", 1, "json_schema", False),
                                    ("http_500", 2, "json_schema", True),
                                    ("ok", 2, "json_object", False)]
    assert sleeps == [0.25]


@pytest.mark.parametrize("fake", [[("status", 500)]], indirect=True)
def test_transient_errors_are_retried_max_retries_times_with_doubling_backoff(study, fake):
    sleeps: list[float] = []
    with analyst(study, fake.url, sleeps, response_format="json_schema") as llm, \
            pytest.raises(LLMFailure, match="http_500: HTTP 500") as failure:
        llm.analyse(history(study))
    assert [(o, a) for o, a, _, _ in requests_made(study)] == [("http_500", 1), ("http_500", 2),
                                                               ("http_500", 3)]
    assert sleeps == [0.25, 0.5] and len(fake.requests) == 3
    assert failure.value.ledger_ids == [e["id"] for e in Ledger(study).entries()]


@pytest.mark.parametrize("fake", [[("llamacpp", GOOD)]], indirect=True)
def test_a_rejected_format_with_no_fallback_left_is_final(study, fake):
    sleeps: list[float] = []
    with analyst(study, fake.url, sleeps, response_format="json_schema") as llm, \
            pytest.raises(LLMFailure, match="http_500"):
        llm.analyse(history(study))
    assert requests_made(study) == [("http_500", 1, "json_schema", True)] and sleeps == []
    assert fake.url not in _FORMAT_MEMO


@pytest.mark.parametrize("fake", [[("llamacpp", GOOD)]], indirect=True)
def test_the_budget_is_checked_before_a_format_probe(study, fake):
    with analyst(study, fake.url, [], max_calls=1) as llm, \
            pytest.raises(LLMFailure, match="budget"):
        llm.analyse(history(study))
    assert [e["outcome"] for e in Ledger(study).entries()] == ["http_500", "budget"]
    assert len(fake.requests) == 1


class Connections:
    """Makes ``fake`` keep connections alive (HTTP/1.1) and records, per request, the client
    port it came from, and each connection's port once the client closed it."""

    def __init__(self, fake: FakeLLM) -> None:
        self.ports: list[int] = []
        self.closed: list[int] = []
        seen = self

        class KeepAlive(fake.server.RequestHandlerClass):
            protocol_version = "HTTP/1.1"

            def handle(self):
                try:
                    super().handle()
                finally:
                    seen.closed.append(self.client_address[1])

            def do_POST(self):
                seen.ports.append(self.client_address[1])
                super().do_POST()

        fake.server.RequestHandlerClass = KeepAlive

    def wait_closed(self, port: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while port not in self.closed and time.monotonic() < deadline:
            time.sleep(0.02)
        return port in self.closed


@pytest.mark.parametrize("fake", [[("llamacpp", GOOD), ("status", 429), ("ok", GOOD)]],
                         indirect=True)
def test_one_client_serves_every_request_and_close_closes_it(study, fake):
    seen = Connections(fake)
    llm = analyst(study, fake.url, [])
    llm.close()  # before any request: nothing to close, and no connection made
    assert seen.ports == []
    llm.analyse(history(study))
    (port,) = set(seen.ports)  # format probe and retry: one client, one kept-alive connection
    assert len(seen.ports) == 3 and seen.closed == []
    llm.close()
    assert seen.wait_closed(port)
    llm.close()  # twice is fine

    history_2 = history(study)
    history_2.trials = history_2.trials[:3]  # a new prompt: not replayed from the cache
    with llm:  # a request after close() opens a new client; the with block closes it
        llm.analyse(history_2)
    assert len(seen.ports) == 4 and seen.ports[-1] != port
    assert seen.wait_closed(seen.ports[-1])
