"""One light worker of ``bench_workers``: a cheap quadratic objective on a shared study.

Imports only Optuna and ``hpo.storage`` (no torch), so 32 of them start in seconds. It loads the
study, writes ``OUT.ready``, waits for the file ``GO`` (which holds the common start time), runs
trials until ``SECONDS`` after that time and writes ``OUT``: every objective call it made
(trial number and id) and every call that returned.

    python -m benchmarks.light_worker URL NAME SEED SECONDS GO OUT
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    url, name, seed, seconds, go, out = argv
    import optuna

    from hpo.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=open_storage(url),
                              sampler=optuna.samplers.RandomSampler(seed=int(seed)))
    Path(out + ".ready").write_text("ready")
    go_file = Path(go)
    deadline = time.time() + 600
    while not go_file.exists():
        if time.time() > deadline:
            return 3
        time.sleep(0.02)
    while True:  # the start time is written after the file appears
        try:
            end = float(go_file.read_text()) + float(seconds)
            break
        except ValueError:
            time.sleep(0.01)
    called: list[list[int]] = []
    returned: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        called.append([trial.number, trial._trial_id])
        x = trial.suggest_float("x", -5.0, 5.0)
        y = trial.suggest_float("y", -5.0, 5.0)
        returned.append(trial.number)
        return (x - 1.0) ** 2 + (y + 2.0) ** 2

    def stop_at_end(study: optuna.Study, _trial) -> None:
        if time.time() >= end:
            study.stop()

    if time.time() < end:
        study.optimize(objective, callbacks=[stop_at_end])
    Path(out).write_text(json.dumps({"called": called, "returned": returned}))
    return 0


# -- the launcher's side (bench_workers, bench_proxy) ------------------------------------------

def start(url: str, name: str, n: int, seconds: float, tmp: Path, tag: str, env: dict[str, str],
          cwd: Path, ready_timeout: float) -> tuple[list[subprocess.Popen], list[Path], Path,
                                                    float]:
    """``n`` workers on study ``name`` at ``url``, each loaded and waiting for the go file;
    returns them, their output files, the go file and the seconds they took to be ready (at
    most ``ready_timeout``, less when one exits early)."""
    outs = [tmp / f"{tag}-{i}.json" for i in range(n)]
    go = tmp / f"{tag}.go"
    go.unlink(missing_ok=True)
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.light_worker", url, name,
                               str(i), str(seconds), str(go), str(out)], env=env, cwd=cwd)
             for i, out in enumerate(outs)]
    t0 = time.perf_counter()
    while not all(Path(str(o) + ".ready").exists() for o in outs):
        if time.perf_counter() - t0 > ready_timeout or any(p.poll() not in (None, 0)
                                                           for p in procs):
            break
        time.sleep(0.1)
    return procs, outs, go, time.perf_counter() - t0


def release(procs: list[subprocess.Popen], go: Path, seconds: float) -> tuple[float, list[int]]:
    """Start every worker at once (the go file holds the common start time) and wait for them;
    returns the start time and their exit codes (-9: killed after ``seconds`` + 300 s)."""
    begun = time.time()
    staged = go.with_suffix(".staged")
    staged.write_text(repr(begun))
    staged.rename(go)  # atomic: a worker never reads a half-written start time
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=seconds + 300))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(-9)
    return begun, codes


def read_calls(outs: list[Path]) -> tuple[list[tuple[int, int]], list[int]]:
    """Every objective call the workers made (trial number, trial id) and every one that
    returned, from their output files (a worker that crashed wrote none)."""
    called: list[tuple[int, int]] = []
    returned: list[int] = []
    for out in outs:
        if out.exists():
            doc = json.loads(out.read_text())
            called += [tuple(c) for c in doc["called"]]
            returned += doc["returned"]
    return called, returned


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
