"""Database passwords stay off command lines: `hpo study`, `hpo worker` and `hpo migrate` take
the storage URL from the environment, from a file only its owner can read, or with `${VAR}`
expanded by hpo, and while they run no process's /proc/PID/cmdline (what `ps` shows every user)
holds the password. A URL file readable by others is refused; a password in argv is warned of.

Each test uses its own password (trust auth ignores it): other tests running on this machine at
the same time may have resume_support.PASSWORD on their command lines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from optuna.trial import TrialState
from resume_support import (
    PASSWORD,
    REPO,
    drop_storage,
    finish,
    load,
    make_project,
    make_storage,
    study_exists,
)
from waiting import wait_for

WARNING = ("hpo: warning: the --storage URL on the command line holds a password (visible in "
           "ps); use $HPO_STORAGE, --storage-file or ${VAR}")


def _secret_url(tmp_path: Path, secret: str) -> str:
    return make_storage("postgresql", tmp_path).replace(PASSWORD, secret)


def _url_file(path: Path, url: str, mode: int = 0o600) -> Path:
    path.write_text(f"# storage for the tests\n{url}\n")
    path.chmod(mode)
    return path


def _spawn(args: list[str], cwd: Path, log: Path, env: dict[str, str]) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items()
            if k not in ("HPO_STORAGE", "HPO_ARTIFACTS", "HPO_MIGRATE_FROM", "HPO_MIGRATE_TO")}
    full.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}, **env)
    handle = open(log, "w")  # noqa: SIM115 - closed with the process by the OS
    return subprocess.Popen([sys.executable, "-m", "hpo.cli", *args], cwd=cwd, env=full,
                            stdout=handle, stderr=subprocess.STDOUT)


class ArgvWatch:
    """Reads every process's /proc/PID/cmdline (as `ps` does) and keeps those holding the
    secret; also notes which of the watched hpo processes it saw."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.hits: list[str] = []
        self.seen: set[int] = set()

    def scan(self, *pids: int) -> None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:  # gone meanwhile
                continue
            if int(entry.name) in pids and b"hpo.cli" in raw:
                self.seen.add(int(entry.name))
            if self.secret in raw:
                shown = raw.replace(b"\0", b" ")
                self.hits.append(f"pid {entry.name}: {shown!r}")


def _running(url: str, n: int, watch: ArgvWatch, *pids: int) -> bool:
    watch.scan(*pids)
    if not study_exists(url):
        return False
    return sum(t.state == TrialState.RUNNING for t in load(url).get_trials(deepcopy=False)) >= n


@pytest.mark.timeout(600)
@pytest.mark.parametrize("way", ["env", "file", "var"])
def test_no_password_in_ps_while_study_worker_and_migrate_run(way, tmp_path):
    secret = f"pw-{uuid.uuid4().hex}"
    url, dst_url = _secret_url(tmp_path, secret), _secret_url(tmp_path, secret)
    project = make_project(tmp_path / "p", n_trials=2, max_epochs=60)
    if way == "env":
        env, args = {"HPO_STORAGE": url}, []
        menv, margs = {"HPO_MIGRATE_FROM": url, "HPO_MIGRATE_TO": dst_url}, []
    elif way == "file":
        src_file = _url_file(tmp_path / "storage.url", url)
        dst_file = _url_file(tmp_path / "dst.url", dst_url)
        env, args = {}, ["--storage-file", str(src_file)]
        menv, margs = {}, ["--from-file", str(src_file), "--to", f"@{dst_file}"]
    else:
        env = menv = {"HPO_TEST_DB_PASSWORD": secret}
        args = ["--storage", url.replace(secret, "${HPO_TEST_DB_PASSWORD}")]
        margs = ["--from", url.replace(secret, "${HPO_TEST_DB_PASSWORD}"),
                 "--to", dst_url.replace(secret, "${HPO_TEST_DB_PASSWORD}")]
    watch = ArgvWatch(secret)
    procs: list[subprocess.Popen] = []
    try:
        study = _spawn(["study", "rt", *args, "--no-progress"], project, tmp_path / "s.log", env)
        procs.append(study)
        watch.scan(study.pid)
        wait_for(lambda: _running(url, 1, watch, study.pid), 300,
                 what=lambda: f"`hpo study` to run a trial: {(tmp_path / 's.log').read_text()}")
        worker = _spawn(["worker", "rt", *args, "--no-progress"], project, tmp_path / "w.log",
                        env)
        procs.append(worker)
        watch.scan(worker.pid)
        wait_for(lambda: _running(url, 2, watch, study.pid, worker.pid), 300,
                 what=lambda: f"`hpo worker` to run a trial: {(tmp_path / 'w.log').read_text()}")
        for proc in procs:  # failed and queued for retry (exit 143): no RUNNING trial left
            proc.send_signal(signal.SIGTERM)
        assert [finish(p, 120) for p in procs] == [143, 143]

        migrate = _spawn(["migrate", "rt", *margs], project, tmp_path / "m.log", menv)
        watch.scan(migrate.pid)  # Popen returns after the exec: its cmdline is there now
        while migrate.poll() is None:
            watch.scan(migrate.pid)
        out = (tmp_path / "m.log").read_text()
        assert migrate.returncode == 0, out
        assert "copied study 'rt': 4 trials" in out
        assert {study.pid, worker.pid, migrate.pid} <= watch.seen  # the scan saw them run
        assert watch.hits == []
        logs = out + (tmp_path / "s.log").read_text() + (tmp_path / "w.log").read_text()
        assert secret not in logs
        assert "holds a password" not in logs  # nothing to warn about
        assert len(load(dst_url).get_trials(deepcopy=False)) == 4
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        drop_storage(url)
        drop_storage(dst_url)


def test_a_url_file_others_can_read_is_refused(tmp_path, hpo_cli):
    secret = f"pw-{uuid.uuid4().hex}"
    url = f"postgresql://ml:{secret}@127.0.0.1:5432/nowhere"
    loose = _url_file(tmp_path / "loose.url", url, 0o644)
    for args in (["report", "rt", "--storage-file", str(loose)],
                 ["report", "rt", "--storage", f"@{loose}"],
                 ["worker", "rt", "--storage-file", str(loose)],
                 ["migrate", "rt", "--from-file", str(loose), "--to", "sqlite:///x.db"],
                 ["migrate", "rt", "--from", "sqlite:///x.db", "--to", f"file://{loose}"]):
        result = hpo_cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert f"storage file {loose} has mode 0644, readable by group or others" \
            in result.stderr, result.stderr
        assert f"chmod 600 {loose}" in result.stderr
        assert secret not in result.stdout + result.stderr
    assert not (tmp_path / "x.db").exists()

    loose.chmod(0o640)  # group-readable is refused too
    result = hpo_cli("report", "rt", "--storage-file", str(loose), cwd=tmp_path)
    assert result.returncode == 2 and "mode 0640" in result.stderr

    missing = hpo_cli("report", "rt", "--storage-file", str(tmp_path / "nope.url"), cwd=tmp_path)
    assert missing.returncode == 2 and "nope.url" in missing.stderr


def test_unset_variable_and_the_argv_warning(tmp_path, hpo_cli):
    secret = f"pw-{uuid.uuid4().hex}"
    url = _secret_url(tmp_path, secret)
    try:
        unset = hpo_cli("worker", "rt", "--storage", url.replace(secret, "${HPO_NO_SUCH_VAR}"),
                        cwd=tmp_path)
        assert unset.returncode == 2
        assert "${HPO_NO_SUCH_VAR} is not set in the environment" in unset.stderr

        # the password on the command line: warned of (one line, no password), then run as usual
        loud = hpo_cli("worker", "rt", "--storage", url, cwd=tmp_path)
        assert loud.returncode == 2 and "a study that exists in" in loud.stderr  # none yet
        assert loud.stderr.splitlines()[0] == WARNING
        assert secret not in loud.stdout + loud.stderr
        moved = hpo_cli("migrate", "rt", "--from", "sqlite:///x.db", "--to", url, cwd=tmp_path)
        assert ("hpo: warning: the --to URL on the command line holds a password (visible in "
                "ps); use $HPO_MIGRATE_TO, --to-file or ${VAR}") in moved.stderr
        assert secret not in moved.stdout + moved.stderr

        # ${VAR}, a 0600 file, $HPO_STORAGE: the same storage, and no warning
        path = _url_file(tmp_path / "ok.url", url)
        for args, env in ((["--storage", url.replace(secret, "${HPO_TEST_PW}")],
                           {"HPO_TEST_PW": secret}),
                          (["--storage-file", str(path)], {}),
                          ([], {"HPO_STORAGE": url})):
            quiet = hpo_cli("worker", "rt", *args, cwd=tmp_path, env=env)
            assert quiet.returncode == 2 and "a study that exists in" in quiet.stderr, \
                quiet.stderr
            assert "warning" not in quiet.stderr and secret not in quiet.stderr
    finally:
        drop_storage(url)


FAKE_HPO = """#!/bin/sh
# stands in for .venv/bin/hpo: what `ps` would show of it and of the recipe's shell, and the URLs
# it got through its environment; one file per call ($FAKE_LOG/PID)
{ printf 'argv:'; tr '\\0' ' ' < /proc/$$/cmdline; printf '\\nshell:'
  tr '\\0' ' ' < /proc/$PPID/cmdline
  printf '\\nenv:%s|%s|%s\\n' "$HPO_STORAGE" "$HPO_MIGRATE_FROM" "$HPO_MIGRATE_TO"
} > "$FAKE_LOG/$$"
"""


def test_make_targets_pass_the_url_through_the_environment(tmp_path):
    """`make study/worker/report/compare/dashboard/migrate`: the URL (with `${VAR}` kept for
    hpo to expand) reaches hpo in its environment; neither hpo's nor the recipe shell's command
    line holds it."""
    secret = f"pw-{uuid.uuid4().hex}"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "hpo").write_text(FAKE_HPO)
    (fake / "hpo").chmod(0o755)
    stamp = tmp_path / "stamp"
    stamp.touch()  # newer than pyproject.toml: `install` has nothing to do
    env = {**os.environ, "HPO_STORAGE": f"postgresql://ml:{secret}@db/h", "PGPASSWORD": secret}
    make = ["make", "-s", "-C", str(REPO), f"BIN={fake}", f"STAMP={stamp}", "NAME=rt"]

    def calls(*args: str) -> list[tuple[str, str, str]]:
        logs = tmp_path / f"calls-{len(list(tmp_path.glob('calls-*')))}"
        logs.mkdir()
        subprocess.run([*make, *args], env={**env, "FAKE_LOG": str(logs)}, check=True,
                       timeout=60)
        found = []
        for f in logs.iterdir():  # the shell's command line may span lines (a long recipe)
            head, got = f.read_text().rstrip("\n").rsplit("\nenv:", 1)
            argv, shell = head.split("\nshell:", 1)
            found.append((argv, shell, "env:" + got))
            assert argv.startswith("argv:") and shell.strip(), (argv, shell)
            assert secret not in argv and secret not in shell, (argv, shell)
            assert not {"--storage", "--from", "--to"} & set(argv.split())
        return found

    for target in (["study"], ["report"], ["compare", "STUDIES=rt"], ["dashboard"]):
        assert [c[2] for c in calls(*target)] == [f"env:postgresql://ml:{secret}@db/h||"]
    assert [c[2] for c in calls("worker", "N=2")] == [f"env:postgresql://ml:{secret}@db/h||"] * 2
    # STORAGE=... on make's command line: `${VAR}` goes through as written, hpo expands it
    assert [c[2] for c in calls("worker", "STORAGE=postgresql://ml:${PGPASSWORD}@db/h")] == \
        ["env:postgresql://ml:${PGPASSWORD}@db/h||"]
    (migrate,) = calls("migrate", "FROM=sqlite:///runs/hpo.db",
                       "TO=postgresql://ml:${PGPASSWORD}@db/h")
    assert migrate[2].endswith("|sqlite:///runs/hpo.db|postgresql://ml:${PGPASSWORD}@db/h")
