"""N light workers through ``hpo storage-proxy`` (Optuna's gRPC proxy) vs N direct to PostgreSQL.

Each side gets its own PostgreSQL database (created and dropped here, 127.0.0.1:5432) and runs
N ``benchmarks.light_worker`` processes (a quadratic objective, no torch) for the same bounded
time, started together. Measured: trials/s, the database connections held (``pg_stat_activity``
of that database, sampled every 0.25 s: the most seen), no trial lost or duplicated (every
objective call's trial COMPLETE exactly once), and the proxy's memory (RSS, peak). Loopback only.

    python -m benchmarks.bench_proxy --quick
    python -m benchmarks.bench_proxy --workers 64 --seconds 60
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks import light_worker
from benchmarks.bench_workers import _env
from benchmarks.common import REPO, check, quiet, table, work_dir, write_result


def _pg_database() -> tuple[str, str]:
    """A fresh PostgreSQL database: (its name, its URL)."""
    import uuid

    import psycopg2

    name = f"hpo_bench_proxy_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    conn.close()
    return name, f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"


def _drop(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    conn.autocommit = True
    conn.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


class Sampler(threading.Thread):
    """Samples the connections to database ``db`` and a process's RSS until stopped."""

    def __init__(self, db: str, pid: int | None) -> None:
        super().__init__(daemon=True)
        import psycopg2

        self.conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
        self.conn.autocommit = True
        self.db, self.pid = db, pid
        self.connections: list[int] = []
        self.rss_mb: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            cur = self.conn.cursor()
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.db,))
            self.connections.append(cur.fetchone()[0])
            if self.pid:
                self.rss_mb.append(_proc_kb(self.pid, "VmRSS") / 1024)
            self.stop.wait(0.25)
        self.conn.close()


def _proc_kb(pid: int, key: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def side(via: str, n: int, seconds: float, tmp: Path) -> dict:
    """One side: ``n`` light workers for ``seconds``, ``via`` "direct" or "proxy"."""
    import optuna
    from optuna.trial import TrialState

    from hpo.optuna_private import trial_id_of
    from hpo.storage import open_storage

    db, url = _pg_database()
    proxy = None
    storage = open_storage(url)
    try:
        optuna.create_study(study_name="light", storage=storage)
        storage.engine.dispose()  # only the workers' (or the proxy's) connections are counted
        worker_url = url
        if via == "proxy":
            port = _free_port()
            log = tmp / f"proxy-{n}.log"
            proxy = subprocess.Popen([sys.executable, "-m", "hpo.cli", "storage-proxy",
                                      "--storage", url, "--port", str(port)], env=_env(),
                                     cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)
            t0 = time.perf_counter()
            while "storage proxy for" not in log.read_text():
                if proxy.poll() is not None or time.perf_counter() - t0 > 120:
                    raise RuntimeError("storage proxy did not start: " + log.read_text())
                time.sleep(0.1)
            worker_url = f"grpc://127.0.0.1:{port}"
        procs, outs, go, startup = light_worker.start(worker_url, "light", n, seconds, tmp, via,
                                                      _env(), REPO, ready_timeout=600)
        sampler = Sampler(db, proxy.pid if proxy else None)
        sampler.start()
        start, codes = light_worker.release(procs, go, seconds)
        sampler.stop.set()
        sampler.join()
        peak_rss = _proc_kb(proxy.pid, "VmHWM") / 1024 if proxy else None
        called, returned = light_worker.read_calls(outs)
        trials = optuna.load_study(study_name="light", storage=storage).get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        end = max((t.datetime_complete.timestamp() for t in complete), default=start)
        by_number = {t.number: t for t in trials}
        numbers, ids = [c[0] for c in called], [c[1] for c in called]
        stored = [trial_id_of(t) for t in trials]
        lost = sum(1 for num in set(numbers) if num not in by_number
                   or by_number[num].state != TrialState.COMPLETE)
        lost += len({t.number for t in complete} - set(numbers))  # done by nobody we know
        duplicated = (len(numbers) - len(set(numbers))) + (len(ids) - len(set(ids))) \
            + (len(stored) - len(set(stored)))
        crashed = sum(c != 0 for c in codes)
        return {"via": via, "workers": n, "seconds": seconds, "startup_s": round(startup, 1),
                "measured_s": round(end - start, 2), "complete": len(complete),
                "trials_per_second": len(complete) / max(end - start, 1e-9),
                "db_connections_max": max(sampler.connections, default=0),
                "db_connections_median": sorted(sampler.connections)[len(sampler.connections) // 2]
                if sampler.connections else 0,
                "proxy_rss_mb_max": max(sampler.rss_mb, default=None),
                "proxy_rss_mb_peak": peak_rss, "lost": lost, "duplicated": duplicated,
                "crashed": crashed, "left_running": sum(t.state == TrialState.RUNNING
                                                        for t in trials),
                "ok": crashed == 0 and lost == 0 and duplicated == 0 and len(called) > 0
                and len(called) == len(returned) == len(complete)}
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=60)
        storage.engine.dispose()
        _drop(db)


def summarize(runs: list[dict], workers: int, seconds: float) -> dict:
    """The table, the checks and the settings of a direct and a proxied side."""
    direct, proxied = runs
    md = table(["workers", "via", "seconds", "trials/s", "COMPLETE trials",
                "db connections (max, median)", "proxy RSS MB (peak)", "lost", "duplicated",
                "workers refused/crashed", "result"],
               [[r["workers"], r["via"], r["measured_s"], round(r["trials_per_second"], 1),
                 r["complete"], f"{r['db_connections_max']}, {r['db_connections_median']}",
                 "-" if r["proxy_rss_mb_peak"] is None else round(r["proxy_rss_mb_peak"], 1),
                 r["lost"], r["duplicated"], r["crashed"], "pass" if r["ok"] else "MISS"]
                for r in runs])
    md += ("\n\nA worker that cannot open the storage (PostgreSQL's `max_connections`, 100 "
           "here, shared with everything else on the server) exits at start: counted as "
           "refused/crashed; its side then misses.")
    intact = all(r["lost"] == 0 and r["duplicated"] == 0 for r in runs)
    fewer = proxied["db_connections_max"] < direct["db_connections_max"]
    checks = [check(f"{workers} light workers, direct and via proxy: no trial lost or duplicated",
                    intact, "true", intact),
              check(f"{workers} light workers via the proxy: all ran (none refused or crashed)",
                    proxied["crashed"] == 0, "true", proxied["crashed"] == 0),
              check("database connections held (max): proxy < direct",
                    f"{proxied['db_connections_max']} vs {direct['db_connections_max']}",
                    "fewer", fewer),
              check("proxy trials/s / direct trials/s",
                    round(proxied["trials_per_second"] / max(direct["trials_per_second"], 1e-9),
                          2), "measured", None)]
    return {"title": "Light workers through the gRPC storage proxy vs direct to PostgreSQL",
            "target": "no trial lost or duplicated either way; every worker runs via the proxy; "
                      "the proxy holds fewer database connections than the workers would",
            "table_md": md,
            "settings": {"workers": workers, "seconds": seconds,
                         "objective": "quadratic, random sampler (benchmarks.light_worker)",
                         "proxy": "hpo storage-proxy, 16 gRPC threads, SQLAlchemy pool 5+10"},
            "runs": runs, "checks": checks,
            "passed": all(c["passed"] is not False for c in checks)}


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60, help="run time of each side")
    args = parser.parse_args(argv)
    quiet()
    if args.quick:
        args.workers, args.seconds = 2, 1.0
    tmp = work_dir("proxy")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    runs = []
    for via in ("direct", "proxy"):
        runs.append(side(via, args.workers, args.seconds, tmp))
        r = runs[-1]
        print(f"  {via}: {r['trials_per_second']:.1f} trials/s, {r['db_connections_max']} db "
              f"connections, ok={r['ok']}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    result = summarize(runs, args.workers, args.seconds)
    print(result["table_md"])
    print("wrote", write_result("proxy", result, args.quick))


if __name__ == "__main__":
    main()
