"""Reports, comparison and dashboard on big studies: 10,000 trials shaped like hpo's (issue 15).

Two studies written by :mod:`benchmarks.gen_big_study` (``big`` and ``big2``, seeds ``s`` and
``s + 1``) in one SQLite file, reused while it holds both (the file is keyed by trials and
seed: ``runs/bench/reports/big-<trials>-s<seed>-v<format>.db``), and a 10-trial study in a file of its
own. Everything runs through the real CLI (``.venv/bin/hpo``), as subprocesses:

* ``hpo report big``: wall time, peak RSS (``/usr/bin/time -v``), HTML size;
* the HTML in headless Chromium (Debian's chromium + chromedriver, through Selenium as
  ``tests/browser.py`` drives it): seconds from opening the file until every figure the page
  creates (``Plotly.newPlot(``) has drawn its SVG;
* ``hpo compare big big2``: wall time, peak RSS;
* ``hpo dashboard``: seconds until it answers HTTP, then the first load of the study: the study
  list the page asks for (``GET /api/studies``) and the study itself
  (``GET /api/studies/<id>?after=0``, optuna-dashboard's endpoint for a study's trials);
* ``hpo report`` of the 10-trial study.

Targets (issue 15): report < 30 s, HTML < 10 MB rendered in < 10 s, compare of the two
< 60 s, dashboard start < 10 s, first study load < 5 s, 10-trial report < 5 s. A missed target is
a result (exit 0); a crash exits 1. Every step is capped (``--cap`` seconds, a browser render
at most 240 s): one that runs past its cap is recorded as missed.

    python -m benchmarks.bench_reports --quick          # ~300 trials: a minute or two
    python -m benchmarks.bench_reports                   # 10,000 trials
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, check, quiet, table, work_dir, write_result

FULL_TRIALS, QUICK_TRIALS, SMALL_TRIALS = 10_000, 300, 10
TARGETS = {  # step -> (seconds or MB, what is measured)
    "report": (30.0, "s"), "html": (10.0, "MB"), "render": (10.0, "s"), "compare": (60.0, "s"),
    "dashboard_start": (10.0, "s"), "study_load": (5.0, "s"), "small_report": (5.0, "s")}
RENDER_CAP = 240.0


def hpo_command() -> list[str]:
    """The ``hpo`` script of this interpreter's environment (``.venv/bin/hpo``)."""
    script = Path(sys.executable).parent / "hpo"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hpo.cli"]


def timed(args: list[str], cwd: Path, cap: float) -> dict[str, Any]:
    """Run ``args`` under ``/usr/bin/time -v``: seconds, exit code, peak RSS (MB), timed out."""
    gnu_time = Path("/usr/bin/time")
    cmd = [str(gnu_time), "-v", *args] if gnu_time.exists() else args
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=cap,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"seconds": round(time.perf_counter() - started, 2), "exit": None,
                "rss_mb": None, "timed_out": True}
    seconds = time.perf_counter() - started
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    out = {"seconds": round(seconds, 2), "exit": proc.returncode,
           "rss_mb": round(int(rss.group(1)) / 1024, 1) if rss else None, "timed_out": False}
    if proc.returncode != 0:
        out["error"] = (proc.stdout + proc.stderr)[-2000:]
    return out


# -- the studies ---------------------------------------------------------------------------------

def studies(workdir: Path, trials: int, seed: int) -> dict[str, Any]:
    """The SQLite file with ``big`` and ``big2`` (generated unless it already holds both), and
    a fresh file with the 10-trial ``small``; what was generated and how long it took."""
    import optuna

    from benchmarks.gen_big_study import FORMAT, generate

    db = workdir / f"big-{trials}-s{seed}-v{FORMAT}.db"
    url = f"sqlite:///{db}"
    info: dict[str, Any] = {"url": url, "reused": False, "generated": []}
    names = set(optuna.get_all_study_names(url)) if db.exists() else set()
    if {"big", "big2"} <= names:
        info["reused"] = True
    else:
        db.unlink(missing_ok=True)
        for name, s in (("big", seed), ("big2", seed + 1)):
            started = time.perf_counter()
            made = generate(url, name, trials, s)
            made["wall_s"] = round(time.perf_counter() - started, 1)
            print(f"  generated {name}: {made['states']}, {made['analyses']} analyses "
                  f"in {made['wall_s']} s", flush=True)
            info["generated"].append(made)
    small = workdir / "small.db"
    small.unlink(missing_ok=True)
    info["small_url"] = f"sqlite:///{small}"
    generate(info["small_url"], "small", SMALL_TRIALS, seed)
    return info


# -- the browser ---------------------------------------------------------------------------------

def render_seconds(html: Path, cap: float) -> dict[str, Any]:
    """Seconds until every figure of ``html`` has drawn in headless Chromium (None past
    ``cap``), and how many of how many drew."""
    import shutil

    try:
        from selenium import webdriver
        from selenium.common.exceptions import TimeoutException, WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return {"seconds": None, "skipped": "selenium not installed (make install)"}
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    if not chromium or not Path(driver_path).exists():
        return {"seconds": None, "skipped": "chromium not installed (make browser-deps)"}
    text = html.read_text(errors="replace")
    expected = text.count("Plotly.newPlot(")
    del text
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,2400", "--disable-extensions", "--no-first-run",
                "--disable-background-networking"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    drawn = 0
    try:
        driver.set_page_load_timeout(cap)
        driver.set_script_timeout(cap)
        started = time.perf_counter()
        try:
            driver.get(html.as_uri())
            drawn = _wait_drawn(driver, expected, started + cap)
        except (TimeoutException, WebDriverException) as exc:
            return {"seconds": None, "expected": expected, "drawn": drawn, "timed_out": True,
                    "error": str(exc).splitlines()[0][:200]}
        seconds = time.perf_counter() - started
        done = drawn >= expected
        return {"seconds": round(seconds, 2) if done else None, "expected": expected,
                "drawn": drawn, "timed_out": not done}
    finally:
        try:
            driver.quit()
        except WebDriverException:
            pass


def _wait_drawn(driver: Any, expected: int, deadline: float) -> int:
    """Poll until ``expected`` figures have an SVG (or the deadline); how many have."""
    script = ("return [...document.querySelectorAll('.js-plotly-plot')]"
              ".filter(d => d.querySelector('.main-svg')).length")
    drawn = 0
    while time.perf_counter() < deadline:
        drawn = driver.execute_script(script)
        if drawn >= expected:
            break
        time.sleep(0.1)
    return drawn


# -- the dashboard -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float) -> tuple[int, int]:
    """Status and body size of a GET (an HTTP error status is an answer too)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, len(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, len(exc.read())


def dashboard(url: str, study: str, cwd: Path, cap: float,
              second: str | None = None) -> dict[str, Any]:
    """``hpo dashboard``: seconds until it answers HTTP, then the study list, the study, the
    study again (a later view), and the ``second`` study (one the dashboard's warm-up, which
    goes in list order, may not have reached yet)."""
    import optuna

    storage = optuna.storages.RDBStorage(url)
    study_id = storage.get_study_id_from_name(study)
    paths = [("list", "/api/studies"), ("study", f"/api/studies/{study_id}?after=0"),
             ("again", f"/api/studies/{study_id}?after=0")]
    if second is not None:
        paths.append(("second", f"/api/studies/{storage.get_study_id_from_name(second)}?after=0"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = cwd / "dashboard.log"
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([*hpo_command(), "dashboard", "--storage", url, "--port",
                                 str(port)], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    result: dict[str, Any] = {"start_s": None, "list_s": None, "study_s": None,
                              "study_id": study_id}
    try:
        result["start_s"] = _wait_http(f"{base}/", proc, started + cap)
        if result["start_s"] is None:
            result["error"] = ("exited: " if proc.poll() is not None else "no answer: ") \
                + log.read_text()[-1500:]
            return result
        for key, path in paths:
            t0 = time.perf_counter()
            status, size = http_get(base + path, timeout=cap)
            result[f"{key}_s"] = round(time.perf_counter() - t0, 2)
            result[f"{key}_status"], result[f"{key}_bytes"] = status, size
    except OSError as exc:  # a timeout or a dropped connection: the step is missed
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return result


def _wait_http(url: str, proc: subprocess.Popen, deadline: float) -> float | None:
    started = time.perf_counter()
    while time.perf_counter() < deadline and proc.poll() is None:
        try:
            http_get(url, timeout=5)
            return round(time.perf_counter() - started, 2)
        except OSError:
            time.sleep(0.2)
    return None


# -- the run -------------------------------------------------------------------------------------

def measure(info: dict[str, Any], workdir: Path, cap: float) -> dict[str, Any]:
    """Every step, in order (each capped at ``cap`` seconds)."""
    hpo, url, out = hpo_command(), info["url"], workdir / "reports"
    steps: dict[str, Any] = {}
    print("  hpo report big", flush=True)
    steps["report"] = timed([*hpo, "report", "big", "--storage", url, "--out", str(out)],
                            workdir, cap)
    html = out / "big.html"
    steps["html"] = {"mb": round(html.stat().st_size / 1e6, 2) if html.exists()
                     and steps["report"]["exit"] == 0 else None}
    print("  render big.html", flush=True)
    steps["render"] = render_seconds(html, min(cap, RENDER_CAP)) if steps["html"]["mb"] \
        else {"seconds": None, "skipped": "no HTML"}
    print("  hpo compare big big2", flush=True)
    steps["compare"] = timed([*hpo, "compare", "big", "big2", "--storage", url, "--out",
                              str(out)], workdir, cap)
    print("  hpo dashboard", flush=True)
    steps["dashboard"] = dashboard(url, "big", workdir, cap, second="big2")
    print("  hpo report small", flush=True)
    steps["small_report"] = timed([*hpo, "report", "small", "--storage", info["small_url"],
                                   "--out", str(out)], workdir, cap)
    return steps


def figures(steps: dict[str, Any]) -> dict[str, float | None]:
    """The one number per target (None: did not finish or failed)."""
    def ok(step: dict[str, Any]) -> float | None:
        return step["seconds"] if step.get("exit") == 0 else None

    d = steps["dashboard"]
    return {"report": ok(steps["report"]), "html": steps["html"]["mb"],
            "render": steps["render"].get("seconds"), "compare": ok(steps["compare"]),
            "dashboard_start": d.get("start_s"),
            "study_load": d.get("study_s") if d.get("study_status") == 200 else None,
            "small_report": ok(steps["small_report"])}


def _note(name: str, steps: dict[str, Any]) -> str:
    """Why a figure is missing, or the side figures (RSS, the study list's load)."""
    step = {"html": steps["html"], "dashboard_start": steps["dashboard"],
            "study_load": steps["dashboard"]}.get(name, steps.get(name, {}))
    if step.get("timed_out"):
        return "ran past its cap"
    if step.get("skipped"):
        return f"skipped: {step['skipped']}"
    if step.get("exit") not in (None, 0):
        return f"exit {step['exit']}"
    if name in ("report", "compare", "small_report") and step.get("rss_mb"):
        return f"peak RSS {step['rss_mb']:.0f} MB"
    if name == "study_load":
        return (f"GET /api/studies {step.get('list_s')} s; study {step.get('study_bytes')} "
                f"bytes; again {step.get('again_s')} s; the other study {step.get('second_s')} s"
                if step.get("study_status") == 200 else str(step.get("error", ""))[:120])
    if name == "render" and step.get("expected") is not None:
        return f"{step['drawn']} of {step['expected']} figures"
    return ""


def report_table(steps: dict[str, Any], trials: int) -> tuple[str, list[dict[str, Any]]]:
    """The Markdown table and the checks."""
    labels = {"report": f"hpo report ({trials} trials)", "html": "report HTML size",
              "render": "HTML render in headless Chromium", "compare": "hpo compare of two",
              "dashboard_start": "hpo dashboard start (answers HTTP)",
              "study_load": "dashboard first load of the study",
              "small_report": f"hpo report ({SMALL_TRIALS} trials)"}
    rows, checks = [], []
    for name, value in figures(steps).items():
        target, unit = TARGETS[name]
        passed = value is not None and value < target
        shown = "n/a" if value is None else f"{value:.2f} {unit}"
        note = _note(name, steps)
        rows.append([labels[name], shown, f"< {target:g} {unit}", "pass" if passed else "MISS",
                     note])
        checks.append(check(labels[name], value, f"< {target:g} {unit}", passed, note))
    return table(["figure", "value", "target", "result", "note"], rows), checks


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TRIALS} trials")
    parser.add_argument("--trials", type=int, help=f"trials per study (default {FULL_TRIALS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cap", type=float, default=600.0, help="seconds per step at most")
    args = parser.parse_args(argv)
    quiet()
    trials = args.trials or (QUICK_TRIALS if args.quick else FULL_TRIALS)
    workdir = work_dir("reports")
    started, commit = time.strftime("%Y-%m-%dT%H:%M:%S%z"), git_commit()
    print(f"studies of {trials} trials in {workdir}", flush=True)
    info = studies(workdir, trials, args.seed)
    steps = measure(info, workdir, args.cap)
    md, checks = report_table(steps, trials)
    print(md)
    result = {"title": f"Reports, comparison and dashboard at {trials} trials",
              "target": "report < 30 s, HTML < 10 MB rendering in < 10 s, compare of two < 60 s, "
                        "dashboard start < 10 s, first study load < 5 s, 10-trial report < 5 s",
              "table_md": md,
              "settings": {"trials": trials, "seed": args.seed, "cap_s": args.cap,
                           "commit": commit, "commit_at_end": git_commit(),
                           "started_at": started,
                           "reused_studies": info["reused"]},
              "studies": info, "steps": steps, "checks": checks,
              "passed": all(c["passed"] for c in checks)}
    print("wrote", write_result("reports", result, args.quick))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
