"""Samplers and pruners on the replayed learning-curve table (issue 13): many seeds, cheap.

Every study is a real ``run_study`` (SQLite storage, the real Optuna samplers and pruners,
llm-tpe with its rules analyst) whose trials are answered from the committed table
(:mod:`benchmarks.replay`, ``studies/headroom.yaml``): no training, so 20 seeds x 100 trials per
sampler take minutes. Figures:

- samplers (random, TPE, llm-tpe rules; no pruning): best-so-far against trials and against
  cumulative epochs (median and IQR over seeds), the trials each needs to reach TPE's median
  best@100 (a seed that never does counts as ``n_trials + 1``), and a paired Wilcoxon
  signed-rank test (scipy, by seed) of llm-tpe's against TPE's trials-to-target and best@100;
- pruners (none, median, hyperband, successive halving; TPE, same seeds): epochs trained, the
  saving against none on the same seed and the best value lost (points = accuracy x 100);
- what each rule of the rules analyst earns (:func:`rule_stats`): proposals made, enqueued
  (the others: duplicate of a tried configuration, capped, over budget), run, how often the
  proposal's trial was the study's best so far (>=) or improved on it (>), and the share of
  the TPE trials around it (the 5 before and 5 after) that it beat.

The real LLM analyst joins only when asked for (``--samplers ...,llm-tpe-llm``): "llm-tpe (llm)",
llm-tpe whose analyses are written by SmolLM2-135M behind a ``llama_cpp.server`` started for the
run (``make test-llm`` installs it; ``HPO_LLM_BASE_URL`` + ``HPO_LLM_MODEL`` name another
endpoint instead), every ``--llm-every`` finished trials, inline (``background: false``: the
trials wait for each analysis, as minutes-long real trials would). Per study it records the
analyses, how many were the LLM's valid replies and how many fell back to the rules analyst (and
why), the ledger's requests, prompt and completion tokens, cost and request seconds, and the
study's wall time. Without an endpoint it is skipped with the reason. Such a run writes
``replay-llm.json`` (its scratch files under ``runs/bench/replay-llm*``), not ``replay.json``.

Targets (printed pass/MISS, never asserted): llm-tpe (rules) reaches TPE's median best@100 in at
most half the trials TPE itself needs for it, with p < 0.05; some pruner saves >= 3x epochs at
<= 0.5 points lost.

    python -m benchmarks.bench_replay --quick        # the tiny table, seconds
    python -m benchmarks.bench_replay --seeds 20 --jobs 1 --samplers tpe,llm-tpe --no-pruners
    python -m benchmarks.bench_replay --seeds 5 --jobs 1 --samplers tpe,llm-tpe-llm --no-pruners
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REPO,
    check,
    default_jobs,
    fmt_spread,
    median_spread,
    quiet,
    set_threads,
    study_config,
    table,
    work_dir,
    write_result,
)

SAMPLERS: dict[str, dict[str, Any]] = {
    "random": {"type": "random"},
    "tpe": {"type": "tpe", "n_startup_trials": 10},
    "llm-tpe (rules)": {"type": "llm-tpe", "n_startup_trials": 10, "analyst": "rules",
                        "every_n_trials": 5},
}
PRUNERS: dict[str, dict[str, Any]] = {
    "none": {"type": "none"},
    "median": {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 5},
    "hyperband": {"type": "hyperband", "min_resource": 1, "reduction_factor": 3},
    "successive halving": {"type": "successive_halving", "min_resource": 1,
                           "reduction_factor": 3},
}
LLM_LABEL = "llm-tpe (llm)"  # opt-in (--samplers ...,llm-tpe-llm): it needs an endpoint
LLM_NAMES = ("llm-tpe-llm", LLM_LABEL)
SAVING_TARGET, GAP_TARGET, P_TARGET = 3.0, 0.5, 0.05
_TABLES: dict[str, Any] = {}


def run_replay_job(spec: dict[str, Any]) -> dict[str, Any]:
    """One replayed study (in a worker process); its trials as plain data."""
    set_threads(1)
    quiet()
    from benchmarks.replay import Table, replay_study

    if spec["table"] not in _TABLES:
        _TABLES[spec["table"]] = Table.load(spec["table"])
    cfg = study_config("headroom", spec["name"], spec["overrides"], Path(spec["workdir"]))
    started = time.perf_counter()
    study = replay_study(cfg, spec["url"], table=_TABLES[spec["table"]], show_progress=False,
                         echo=lambda _: None)
    wall = time.perf_counter() - started
    trials = [{"number": t.number, "state": t.state.name, "value": t.value,
               "epochs": t.user_attrs.get("epochs", 0),
               "seconds": t.user_attrs.get("duration_s", 0.0),
               "source": t.user_attrs.get("hpo_source", "tpe")}
              for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
              if t.state.is_finished()]
    return {"name": spec["name"], "trials": trials, "proposals": proposals_of(study),
            "wall_s": round(wall, 2), "analyst": analyst_usage(study)}


def analyst_usage(study: Any) -> dict[str, Any]:
    """What a study's analyses were and cost: analyses stored, those written from a valid LLM
    reply, those where the rules analyst took over after an LLM failure (by the failure's
    ledger outcome), and the LLM ledger: requests sent, entries by outcome, prompt and
    completion tokens (as the server counted them), cost (0 without a price) and the seconds
    the requests took."""
    from hpo.optuna_private import study_system_attrs
    from hpo.record import read_analyses
    from hpo.sampler.ledger import read_entries, totals

    analyses = read_analyses(study_system_attrs(study))
    entries = read_entries(study)
    t = totals(entries)
    reasons = dict(Counter(a.fallback_reason.split(":", 1)[0] for a in analyses
                           if a.fallback_reason))
    return {"analyses": len(analyses), "llm_replies": sum(a.analyst == "llm" for a in analyses),
            "fallbacks": sum(reasons.values()), "fallback_reasons": reasons,
            "requests": t.calls, "outcomes": t.outcomes, "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens, "cost": t.cost,
            "request_s": round(sum(float(e.get("latency_s") or 0) for e in entries), 2)}


def proposals_of(study: Any) -> list[dict[str, Any]]:
    """Every proposal of the study's stored analyses: the rule that wrote it, its status
    (enqueued, duplicate, capped, over_budget, dropped) and its trial."""
    from hpo.optuna_private import study_system_attrs
    from hpo.record import read_analyses
    from hpo.sampler.rules import rule_of

    return [{"analysis": a.id, "rule": rule_of(p.rationale) if a.analyst == "rules" else a.analyst,
             "status": p.status, "trial": p.trial_number}
            for a in read_analyses(study_system_attrs(study)) for p in a.proposals]


RULE_WINDOW = 5  # TPE trials each side a proposal's trial is compared with


def rule_stats(runs: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]
               ) -> dict[str, dict[str, Any]]:
    """Per rule, over ``runs`` (each: its trials, its proposals): proposals made, by status,
    run (its trial complete), best so far (its value >= every earlier complete trial's),
    improved (>), and the mean share of the :data:`RULE_WINDOW` TPE trials before and after
    it that its value beat (ties count half)."""
    out: dict[str, dict[str, Any]] = {}
    for trials, proposals in runs:
        by_number = {t["number"]: t for t in trials}
        tpe = [t for t in trials if t["source"] == "tpe" and t["state"] == "COMPLETE"]
        for p in proposals:
            r = out.setdefault(p["rule"], {"made": 0, "status": {}, "run": 0, "best_so_far": 0,
                                           "improved": 0, "beat_tpe_around": []})
            r["made"] += 1
            r["status"][p["status"]] = r["status"].get(p["status"], 0) + 1
            t = by_number.get(p["trial"]) if p["status"] == "enqueued" else None
            if t is None or t["state"] != "COMPLETE" or t["value"] is None:
                continue
            r["run"] += 1
            before = [u["value"] for u in trials if u["number"] < t["number"]
                      and u["state"] == "COMPLETE" and u["value"] is not None]
            r["best_so_far"] += not before or t["value"] >= max(before) - 1e-12
            r["improved"] += bool(before) and t["value"] > max(before) + 1e-12
            earlier = [u for u in tpe if u["number"] < t["number"]][-RULE_WINDOW:]
            later = [u for u in tpe if u["number"] > t["number"]][:RULE_WINDOW]
            around = [u["value"] for u in earlier + later]
            if around:
                r["beat_tpe_around"].append(sum(1.0 if t["value"] > v else 0.5 if t["value"] == v
                                                else 0.0 for v in around) / len(around))
    for r in out.values():
        shares = r.pop("beat_tpe_around")
        r["beat_tpe_around"] = round(statistics.mean(shares), 3) if shares else None
    return out


def run_jobs(specs: list[dict[str, Any]], jobs: int) -> list[dict[str, Any]]:
    if jobs <= 1:
        return [run_replay_job(s) for s in specs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(run_replay_job, specs))


def best_so_far(trials: list[dict[str, Any]]) -> list[float]:
    """Best complete value after each finished trial (0 before the first)."""
    out, best = [], 0.0
    for t in trials:
        if t["state"] == "COMPLETE" and t["value"] is not None:
            best = max(best, t["value"])
        out.append(best)
    return out


def by_epochs(trials: list[dict[str, Any]], marks: list[int]) -> list[float]:
    """Best complete value once the cumulative epochs reach each mark."""
    out, best, spent, i = [], 0.0, 0, 0
    for mark in marks:
        while i < len(trials) and spent + trials[i]["epochs"] <= mark:
            t = trials[i]
            spent += t["epochs"]
            if t["state"] == "COMPLETE" and t["value"] is not None:
                best = max(best, t["value"])
            i += 1
        out.append(best)
    return out


def reach(curve: list[float], target: float) -> int:
    """Trials until the best-so-far reaches ``target`` (``len + 1`` when it never does)."""
    return next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-12), len(curve) + 1)


def wilcoxon(a: list[float], b: list[float]) -> float | None:
    """One-sided paired signed-rank p-value that ``a`` is smaller than ``b`` (None: all ties)."""
    from scipy.stats import wilcoxon as test

    if all(x == y for x, y in zip(a, b, strict=True)):
        return None
    return float(test(a, b, alternative="less").pvalue)


def compare_samplers(specs: list[dict], samplers: list[str],
                     scratch: str = "replay-studies") -> dict[str, str]:
    """Copy the sampler studies of ``specs`` (one SQLite file each) into one storage that is
    kept (``runs/bench/<scratch>/replay.db``, remade each run) and draw them with
    ``hpo compare``, one group per sampler: the storage URL, the command and the HTML."""
    import optuna

    from hpo.report.compare import build_compare

    folder = work_dir(scratch)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    url = f"sqlite:///{folder / 'replay.db'}"
    for spec in specs:
        optuna.copy_study(from_study_name=spec["name"], from_storage=spec["url"], to_storage=url)
    groups = [f"{label}={_slug('sampler', label)}-s*" for label in samplers]
    report = build_compare([], url, groups=groups, out_dir=folder, out_name="compare-samplers")
    command = ("hpo compare --storage " + url + " "
               + " ".join(f"--group '{g}'" for g in groups))
    return {"url": url, "command": command, "html": str(report.html)}


def llm_sampler(stack: ExitStack, every: int, chosen: dict[str, dict[str, Any]],
                threads: int | None = None) -> str:
    """Add :data:`LLM_LABEL` to ``chosen``: llm-tpe with the LLM analyst (inline, an analysis
    every ``every`` trials) against the endpoint of ``llm_server.llm_endpoint`` (a server
    started here gets ``threads`` threads, default one per core), kept up until ``stack``
    closes, with SmolLM2's reply settings. Returns where the endpoint came from, or
    why the sampler is not run (then ``chosen`` is left as it was)."""
    sys.path.insert(0, str(REPO / "tests"))
    from llm_server import SMOLLM2_REPLY, NoEndpoint, llm_endpoint

    try:
        endpoint = stack.enter_context(llm_endpoint(work_dir("llm-server") / "server.log",
                                                    threads=threads or os.cpu_count() or 1))
    except NoEndpoint as exc:
        print(f"{LLM_LABEL} skipped: {exc}", flush=True)
        return f"not run: {exc}"
    chosen[LLM_LABEL] = {"type": "llm-tpe", "n_startup_trials": 10, "analyst": "llm",
                         "every_n_trials": every, "background": False,
                         "llm": {**endpoint.config, **SMOLLM2_REPLY}}
    return endpoint.source


def _slug(kind: str, label: str) -> str:
    """The study name prefix of a sampler's or pruner's runs (``sampler-llm-tpe_rules``)."""
    return f"{kind}-{label.replace(' ', '_').replace('(', '').replace(')', '')}"


def run(quick: bool, seeds: list[int], n_trials: int, jobs: int, table_path: Path,
        samplers: list[str] | None = None, pruners: bool = True,
        llm_every: int | None = None, llm_threads: int | None = None) -> dict:
    """Every sampler of ``samplers`` (default all; TPE and llm-tpe always: the target and the
    comparison) on every seed, then (``pruners``) every pruner with TPE; the figures, tables
    and checks. ``llm_every``: also llm-tpe with the LLM analyst, an analysis every
    ``llm_every`` trials (:func:`llm_sampler`, its server on ``llm_threads`` threads), when an
    endpoint is there."""
    chosen = {s: SAMPLERS[s] for s in SAMPLERS
              if s in ("tpe", "llm-tpe (rules)") or samplers is None or s in samplers}
    scratch = "replay-llm" if llm_every else "replay"
    tmp = work_dir(scratch)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    def spec(kind: str, label: str, seed: int, sampler: dict, pruner: dict) -> dict:
        name = f"{_slug(kind, label)}-s{seed}"
        return {"name": name, "kind": kind, "label": label, "seed": seed,
                "table": str(table_path), "url": f"sqlite:///{tmp / name}.db",
                "workdir": str(tmp),
                "overrides": {"seed": seed, "sampler": sampler, "pruner": pruner,
                              "budget": {"n_trials": n_trials, "max_epochs": 30},
                              "artifacts": {"path": str(tmp / "artifacts")}}}

    with ExitStack() as stack:
        llm_source = llm_sampler(stack, llm_every, chosen, llm_threads) if llm_every else None
        specs = [spec("sampler", s, seed, cfg, PRUNERS["none"])
                 for s, cfg in chosen.items() for seed in seeds]
        specs += [spec("pruner", p, seed, SAMPLERS["tpe"], cfg)
                  for p, cfg in PRUNERS.items() if p != "none" and pruners for seed in seeds]
        results = run_jobs(specs, jobs)
    compared = compare_samplers([s for s in specs if s["kind"] == "sampler"], list(chosen),
                                f"{scratch}-studies")
    shutil.rmtree(tmp, ignore_errors=True)
    usage = {(s["label"], s["seed"]): {"wall_s": r["wall_s"], **r["analyst"]}
             for s, r in zip(specs, results, strict=True) if s["kind"] == "sampler"}
    runs = {(s["kind"], s["label"], s["seed"]): r["trials"]
            for s, r in zip(specs, results, strict=True)}
    proposals = {(s["kind"], s["label"], s["seed"]): r["proposals"]
                 for s, r in zip(specs, results, strict=True)}
    for seed in seeds:  # TPE without pruning is the pruners' reference
        runs[("pruner", "none", seed)] = runs[("sampler", "tpe", seed)]

    # the task's headroom, from the table itself
    import gzip
    import json

    from benchmarks.bench_table import headroom

    with gzip.open(table_path, "rt") as fh:
        task = headroom(json.load(fh))
    md_task = (f"Task (table `{table_path.name}`, {task['runs']} runs of {task['configs']} "
               f"configurations): median configuration {task['median_config']:.4f}, best "
               f"{task['best_config']:.4f} ({task['gap_points']:.1f} points apart, target >= 10); "
               f"the best's seed-mean curve peaks at epoch {task['best_mean_curve_epoch']} (target "
               f">= 15; per seed {task['best_epochs']}); the best's "
               f"seed-to-seed spread {task['best_seed_spread_points']:.2f} points (target < 1), "
               f"median over configurations {task['median_abs_seed_diff_points']:.2f}.")

    # samplers
    curves = {s: [best_so_far(runs[("sampler", s, seed)]) for seed in seeds] for s in chosen}
    target = statistics.median(c[-1] for c in curves["tpe"])
    max_epochs = max(sum(t["epochs"] for t in runs[("sampler", s, seed)])
                     for s in chosen for seed in seeds)
    marks = [round(max_epochs * k / 10) for k in range(1, 11)]
    summary: dict[str, Any] = {}
    rows = []
    for s in chosen:
        reached = [reach(c, target) for c in curves[s]]
        at = {n: median_spread([c[min(n, len(c)) - 1] for c in curves[s]])
              for n in sorted({10, 25, 50, n_trials}) if n <= n_trials}
        ep = [by_epochs(runs[("sampler", s, seed)], marks) for seed in seeds]
        summary[s] = {"trials_to_target": median_spread(reached), "trials_per_seed": reached,
                      "reached": sum(r <= n_trials for r in reached),
                      "best_at": {str(n): v for n, v in at.items()},
                      "best_by_trial": [median_spread([c[i] for c in curves[s]])
                                        for i in range(n_trials)],
                      "best_by_epochs": {"marks": marks,
                                         "stats": [median_spread([e[i] for e in ep])
                                                   for i in range(len(marks))]},
                      "analysed": sum(t["source"] != "tpe" for seed in seeds
                                      for t in runs[("sampler", s, seed)]),
                      "rules": rule_stats([(runs[("sampler", s, seed)],
                                            proposals[("sampler", s, seed)]) for seed in seeds]),
                      "analyst": usage_summary([usage[(s, seed)] for seed in seeds])}
        rows.append([s] + [fmt_spread(at[n], "{:.4f}", "iqr") for n in at]
                    + [fmt_spread(summary[s]["trials_to_target"], "{:.0f}", "iqr"),
                       f"{summary[s]['reached']}/{len(seeds)}"])
    llm, tpe = summary["llm-tpe (rules)"], summary["tpe"]
    p_reach = wilcoxon(llm["trials_per_seed"], tpe["trials_per_seed"])
    p_best = wilcoxon([-c[-1] for c in curves["llm-tpe (rules)"]], [-c[-1] for c in curves["tpe"]])
    # the target: TPE's own median best@N in at most half the trials TPE needs for it
    half = tpe["trials_to_target"]["median"] / 2
    fast = llm["trials_to_target"]["median"] <= half
    significant = p_reach is not None and p_reach < P_TARGET
    checks = [check(f"llm-tpe (rules): trials to TPE's median best@{n_trials}",
                    llm["trials_to_target"]["median"], f"<= {half:g} (half of TPE's)", fast,
                    f"TPE itself: {tpe['trials_to_target']['median']:g}"),
              check("llm-tpe (rules) vs TPE: paired Wilcoxon p (trials to target)",
                    "n/a" if p_reach is None else round(p_reach, 4), f"< {P_TARGET}",
                    significant)]
    md = table(["sampler"] + [f"best@{n} (IQR)" for n in at]
               + [f"trials to TPE's median best@{n_trials} (IQR)", "seeds reaching it"], rows)
    md += (f"\n\nTarget value (TPE's median best@{n_trials}): {target:.4f}. Paired Wilcoxon "
           f"(one-sided, llm-tpe < TPE) by seed: trials to target p = {p_reach}, "
           f"best@{n_trials} p = {p_best}. {len(seeds)} seeds, {n_trials} trials each, "
           f"table `{table_path.name}`.\n\n")
    ep_rows = [[s] + [fmt_spread(summary[s]["best_by_epochs"]["stats"][i], "{:.4f}", "iqr")
                      for i in range(0, len(marks), 3)] for s in chosen]
    md += "Best-so-far against cumulative epochs, median (IQR):\n\n" + table(
        ["sampler"] + [f"{marks[i]} epochs" for i in range(0, len(marks), 3)], ep_rows)
    md += ("\n\nWhat each rule of llm-tpe's rules analyst earned (all seeds): proposals made, "
           "enqueued / duplicate of a tried configuration / capped or over budget, run, the "
           "study's best so far when it ran (>=) and better than it (>), mean share of the "
           f"{RULE_WINDOW} TPE trials before and after it that it beat:\n\n") + rules_table(
        llm["rules"])

    if LLM_LABEL in chosen:
        md += "\n\n" + llm_section(summary, curves, chosen[LLM_LABEL], llm_source, n_trials,
                                   len(seeds))
    elif llm_source:
        md += f"\n\n{LLM_LABEL}: {llm_source}"

    # pruners
    prune_rows, prune = [], {}
    for p in PRUNERS if pruners else ():
        mine = [runs[("pruner", p, seed)] for seed in seeds]
        base = [runs[("pruner", "none", seed)] for seed in seeds]
        epochs = [sum(t["epochs"] for t in r) for r in mine]
        saving = [sum(t["epochs"] for t in b) / max(e, 1) for b, e in zip(base, epochs,
                                                                            strict=True)]
        gap = [100 * (best_so_far(b)[-1] - best_so_far(r)[-1]) for b, r in zip(base, mine,
                                                                                  strict=True)]
        prune[p] = {"epochs": median_spread(epochs), "saving_x": median_spread(saving),
                    "gap_points": median_spread(gap),
                    "pruned": median_spread([sum(t["state"] == "PRUNED" for t in r)
                                             for r in mine])}
        ok = None
        if p != "none":
            ok = prune[p]["saving_x"]["median"] >= SAVING_TARGET and \
                prune[p]["gap_points"]["median"] <= GAP_TARGET
            checks.append(check(f"{p}: epoch saving x / points lost",
                                f"{prune[p]['saving_x']['median']:.2f}x / "
                                f"{prune[p]['gap_points']['median']:+.2f}",
                                f">= {SAVING_TARGET:g}x at <= {GAP_TARGET}", ok))
        prune_rows.append([p, fmt_spread(prune[p]["epochs"], "{:.0f}", "iqr"),
                           fmt_spread(prune[p]["saving_x"], "{:.2f}x", "iqr"),
                           fmt_spread(prune[p]["gap_points"], "{:+.2f}", "iqr"),
                           fmt_spread(prune[p]["pruned"], "{:.0f}", "iqr"),
                           "(reference)" if ok is None else ("pass" if ok else "MISS")])
    md += "\n\nPruners (TPE, same seeds, 30-epoch trials), median (IQR):\n\n" + (table(
        ["pruner", "epochs trained", "fewer epochs than none", "points below none",
         "pruned trials", "result"], prune_rows) if pruners else "(not run: --no-pruners)")
    md += "\n\n" + md_task.strip()
    md += (f"\n\nThe sampler studies are kept in `{compared['url']}` and drawn by "
           f"`{compared['command']}` (median and band per sampler against trials, cumulative "
           f"epochs and wall time): `{compared['html']}`.")
    best_pruner = any(c["passed"] for c in checks[2:])
    return {"title": "Samplers and pruners on the replayed digits-noisy table",
            "target": (f"llm-tpe (rules) reaches TPE's median best@{n_trials} in at most half "
                       f"the trials TPE needs with p < {P_TARGET}; some pruner >= "
                       f"{SAVING_TARGET:g}x fewer epochs at <= {GAP_TARGET} points lost"),
            "table_md": md,
            "settings": {"seeds": seeds, "n_trials": n_trials, "table": table_path.name,
                         "samplers": chosen, "pruners": PRUNERS if pruners else {},
                         "jobs": jobs},
            "llm_endpoint": llm_source, "task": task, "target_value": target,
            "p_trials_to_target": p_reach, "p_best": p_best,
            "summary": summary, "pruning": prune, "checks": checks, "compare": compared,
            "passed": fast and significant and best_pruner,
            "runs": {f"{k[0]}|{k[1]}|{k[2]}": [[t["state"][0], t["value"], t["epochs"]]
                                              for t in v] for k, v in runs.items()}}


def usage_summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`analyst_usage` (with ``wall_s``) of a sampler's studies: totals over them, the
    median and IQR per study of tokens and seconds, and each study's figures."""
    total = {k: sum(u[k] for u in per_seed) for k in (
        "analyses", "llm_replies", "fallbacks", "requests", "prompt_tokens", "completion_tokens",
        "cost", "request_s")}
    def summed(key: str) -> dict[str, int]:
        return dict(sum((Counter(u[key]) for u in per_seed), Counter()))

    return {"total": {**total, "fallback_reasons": summed("fallback_reasons"),
                      "outcomes": summed("outcomes")},
            "per_study": {k: median_spread([u[k] for u in per_seed]) for k in (
                "analyses", "prompt_tokens", "completion_tokens", "request_s", "wall_s")},
            "per_seed": per_seed}


def llm_section(summary: dict[str, Any], curves: dict[str, list[list[float]]],
                sampler: dict[str, Any], source: str, n_trials: int, n_seeds: int) -> str:
    """The Markdown of the LLM analyst's run: each sampler's trials to TPE's median best,
    best@N, analyses, valid LLM replies and fallbacks, tokens, seconds; the paired test
    against TPE and what the LLM's proposals earned."""
    rows = []
    for s, v in summary.items():
        a, per = v["analyst"]["total"], v["analyst"]["per_study"]
        llm = a["requests"] > 0
        rows.append([s, fmt_spread(v["trials_to_target"], "{:.0f}", "iqr"),
                     f"{v['reached']}/{n_seeds}",
                     fmt_spread(v["best_at"][str(n_trials)], "{:.4f}", "iqr"),
                     a["analyses"], f"{a['llm_replies']} / {a['fallbacks']}" if llm else "-",
                     a["requests"] if llm else "-",
                     fmt_spread(per["prompt_tokens"], "{:.0f}", "iqr") if llm else "-",
                     fmt_spread(per["completion_tokens"], "{:.0f}", "iqr") if llm else "-",
                     fmt_spread(per["request_s"], "{:.0f}", "iqr") if llm else "-",
                     fmt_spread(per["wall_s"], "{:.0f}", "iqr")])
    md = table(["sampler", f"trials to TPE's median best@{n_trials} (IQR)", "seeds reaching it",
                f"best@{n_trials} (IQR)", "analyses (all seeds)",
                "valid LLM replies / fallbacks to rules", "LLM requests",
                "prompt tokens per study (IQR)", "completion tokens per study (IQR)",
                "LLM request s per study (IQR)", "study wall s (IQR)"], rows)
    mine, tpe = summary[LLM_LABEL], summary["tpe"]
    p_reach = wilcoxon(mine["trials_per_seed"], tpe["trials_per_seed"])
    p_best = wilcoxon([-c[-1] for c in curves[LLM_LABEL]], [-c[-1] for c in curves["tpe"]])
    a = mine["analyst"]["total"]
    settings = {k: v for k, v in sampler["llm"].items() if k != "base_url"}
    md += (f"\n\n{LLM_LABEL}: endpoint {source}, {settings}, an analysis every "
           f"{sampler['every_n_trials']} trials, inline. Paired Wilcoxon (one-sided, "
           f"{LLM_LABEL} < TPE) by seed: trials to target p = {p_reach}, best@{n_trials} p = "
           f"{p_best}. All seeds: {a['prompt_tokens']} prompt + {a['completion_tokens']} "
           f"completion tokens in {a['requests']} requests (ledger outcomes "
           f"{a['outcomes']}), cost {a['cost']:g} (no price set: a local model; apply a hosted "
           f"price per 1k tokens to the token counts), {a['request_s']:.0f} s in requests; "
           f"fallbacks by reason {a['fallback_reasons'] or '{}'}.\n\nWhat the proposals of "
           f"{LLM_LABEL} earned (rule \"llm\": the LLM's; the others: the rules analyst's "
           "after a fallback):\n\n")
    return md + rules_table(mine["rules"])


def rules_table(stats: dict[str, dict[str, Any]]) -> str:
    """The Markdown table of :func:`rule_stats`, rules in the analyst's order."""
    from hpo.sampler.rules import RATIONALES

    rows = []
    for rule in [*RATIONALES, *sorted(set(stats) - set(RATIONALES))]:
        r = stats.get(rule)
        if r is None:
            continue
        st = r["status"]
        rows.append([rule, r["made"], st.get("enqueued", 0), st.get("duplicate", 0),
                     st.get("capped", 0) + st.get("over_budget", 0), r["run"],
                     r["best_so_far"], r["improved"],
                     "-" if r["beat_tpe_around"] is None else f"{r['beat_tpe_around']:.2f}"])
    return table(["rule", "made", "enqueued", "duplicate", "capped/over budget", "run",
                  "best so far", "improved", "beat TPE around"], rows)


def main(argv: list[str] | None = None) -> None:
    from benchmarks.replay import TABLE, TINY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--n-trials", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=default_jobs())
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--samplers", help="comma-separated samplers to run (tpe and llm-tpe "
                        "always run); default all: " + ", ".join(SAMPLERS) + "; llm-tpe-llm "
                        "(the LLM analyst) only when named")
    parser.add_argument("--no-pruners", action="store_true", help="samplers only")
    parser.add_argument("--llm-every", type=int, default=5,
                        help="llm-tpe-llm: an LLM analysis every N finished trials")
    parser.add_argument("--llm-threads", type=int, help="llm-tpe-llm: threads of the SmolLM2 "
                        "server started here (default: one per core; on cores other work keeps "
                        "busy, 1 is faster)")
    args = parser.parse_args(argv)
    if args.quick:  # in this process, on the tiny table
        args.seeds, args.n_trials, args.jobs, args.table = 2, 10, 1, TINY
    samplers = [s.strip() for s in args.samplers.split(",")] if args.samplers else None
    unknown = sorted(set(samplers or []) - set(SAMPLERS) - {"llm-tpe", *LLM_NAMES})
    if unknown:
        parser.error(f"unknown samplers {unknown}; known: {', '.join(SAMPLERS)}, "
                     f"{LLM_NAMES[0]}")
    llm_every = args.llm_every if set(samplers or []) & set(LLM_NAMES) else None
    result = run(args.quick, list(range(args.seeds)), args.n_trials, args.jobs, args.table,
                 samplers, pruners=not args.no_pruners, llm_every=llm_every,
                 llm_threads=args.llm_threads)
    print(result["table_md"])
    for c in result["checks"]:
        verdict = "pass" if c["passed"] else "MISS"
        print(f"{c['name']}: {c['value']} (target {c['target']}): {verdict}")
    print("wrote", write_result("replay-llm" if llm_every else "replay", result, args.quick))


if __name__ == "__main__":
    main()
