"""Helpers for the sampler tests: a quadratic objective with curves, and a misbehaving
OpenAI-compatible HTTP endpoint (a real server on 127.0.0.1, not a mock)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import optuna

from hpo.sampler import LLMTPEOptions, LLMTPESampler
from hpo.space import SearchSpace

SPACE = SearchSpace.model_validate({"params": {
    "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    "x": {"type": "float", "low": -5.0, "high": 5.0},
    "n": {"type": "int", "low": 1, "high": 9, "step": 2},
    "opt": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "momentum": {"type": "float", "low": 0.5, "high": 0.99, "condition": {"opt": "sgd"}},
}})


def quadratic(trial: optuna.Trial) -> float:
    """A cheap objective with a 4-epoch 'curve' (no PyTorch)."""
    p = SPACE.suggest(trial)
    value = (p["x"] - 1.5) ** 2 + (p["n"] - 5) ** 2 * 0.1 + (0.3 if p["opt"] == "sgd" else 0.0)
    value += abs(__import__("math").log10(p["lr"]) + 2) * 0.2
    for epoch in range(1, 5):
        trial.report(value * (1 + 1 / epoch), epoch)
    return value


def make_study(url: str, name: str = "q", seed: int = 0, context: dict | None = None,
               **options) -> optuna.Study:
    opts = LLMTPEOptions(**{"background": False, **options})
    sampler = LLMTPESampler(SPACE, opts, seed=seed, n_startup_trials=5, context=context)
    return optuna.create_study(study_name=name, storage=url, sampler=sampler,
                               load_if_exists=True)


def completion(text: str, prompt_tokens: int = 120, completion_tokens: int = 60) -> dict:
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


GOOD = json.dumps({
    "summary": "converging",
    "diagnosis": [{"state": "converging", "summary": "x near 1.5 is best",
                   "evidence": [{"trial": 0, "metric": "value", "value": 0.1, "note": "best"}]}],
    "proposals": [{"params": {"lr": 0.01, "x": 1.4, "n": 5, "opt": "adamw", "momentum": 0.9},
                   "rationale": "centre on the best", "expected_effect": "lower value",
                   "risk": "low", "confidence": 0.8, "alternatives": []}]})


class FakeLLM:
    """An OpenAI-compatible endpoint that plays a script of behaviours, one per request.

    Behaviours: ("ok", text) | ("status", code) | ("slow", seconds) |
    ("llamacpp", text): 500 to json_schema response_format (llama.cpp's own error body, a
    pydantic validation error), else the text |
    ("hosted400", text): 400 "response_format json_object is not supported" to json_object
    (as hosted APIs answer), else the text.
    When the script runs out, the last behaviour repeats.
    """

    def __init__(self, script: list[tuple]) -> None:
        self.script, self.requests = list(script), []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                kind, arg = fake.script.pop(0) if len(fake.script) > 1 else fake.script[0]
                if kind == "slow":
                    time.sleep(arg)
                    return self._send(200, completion(GOOD))
                if kind == "status":
                    return self._send(arg, {"error": {"message": f"status {arg}"}})
                fmt = (body.get("response_format") or {}).get("type")
                if kind == "llamacpp" and fmt == "json_schema":
                    return self._send(500, {"error": {
                        "message": "1 validation error for CreateChatCompletionRequest\n"
                                   "response_format.type\n  Input should be 'text' or "
                                   "'json_object' [type=literal_error, input_value='json_schema']",
                        "type": "internal_server_error", "param": None, "code": None}})
                if kind == "hosted400" and fmt == "json_object":
                    return self._send(400, {"error": {
                        "message": "Invalid parameter: 'response_format' of type 'json_object' "
                                   "is not supported with this model.",
                        "type": "invalid_request_error", "param": "response_format"}})
                return self._send(200, completion(arg))

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
