"""One light worker of ``bench_workers``: a cheap quadratic objective on a shared study.

Imports only Optuna and ``hpo.storage`` (no torch), so 32 of them start in seconds. It loads the
study, writes ``OUT.ready``, waits for the file ``GO`` (which holds the common start time), runs
trials until ``SECONDS`` after that time and writes ``OUT``: every objective call it made
(trial number and id) and every call that returned.

    python -m benchmarks.light_worker URL NAME SEED SECONDS GO OUT
"""

from __future__ import annotations

import json
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
