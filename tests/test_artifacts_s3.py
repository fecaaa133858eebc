"""Checkpoints in a real S3-compatible server on loopback (moto's server mode): a trial killed
on one worker resumes from its S3 checkpoint on another with no shared disk, the workers joined
to PostgreSQL directly or through ``hpo storage-proxy``; a missing bucket, refused credentials
and an unreachable endpoint are one line each (exit 2, 2, 75).

The server enforces credentials (``INITIAL_NO_AUTH_ACTION_COUNT``: the fixture's first four
requests create the bucket, an IAM user, its policy and its key; every later request must be
signed with that key), so a wrong key is refused as AWS or MinIO would refuse it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from optuna.trial import TrialState
from resume_support import (
    PASSWORD,
    drop_storage,
    finish,
    load,
    make_project,
    make_storage,
    running_with_checkpoint,
    spawn,
)
from waiting import wait_for

from hpo.cli import main

REPO = Path(__file__).resolve().parents[1]
BUCKET = "hpo-ckpt"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with bucket BUCKET and one IAM key allowed to use it."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}
    with open(log, "w") as handle:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                   "-p", str(port)], stdout=handle, stderr=subprocess.STDOUT,
                                  env=env)
    try:
        wait_for(lambda: _listening(port) or server.poll() is not None, 120,
                 what="moto server to listen")
        assert server.poll() is None, log.read_text()
        endpoint = f"http://127.0.0.1:{port}"
        setup = {"endpoint_url": endpoint, "region_name": REGION,
                 "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)                    # 1
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="hpo")                                             # 2
        iam.put_user_policy(UserName="hpo", PolicyName="s3", PolicyDocument=json.dumps({  # 3
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="hpo")["AccessKey"]                    # 4
        yield {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": REGION,
               "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    finally:
        server.terminate()
        server.wait()


def _bucket_keys(env: dict) -> set[str]:
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=REGION,
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    return {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def _reported_checkpoint(url: str):
    """The RUNNING trial once its first checkpoint is in the bucket and that epoch reported."""
    trial = running_with_checkpoint(url, 1)
    if trial is not None and trial.user_attrs["checkpoint"]["epoch"] in trial.intermediate_values:
        return trial
    return None


def _start_proxy(url: str, log: Path) -> tuple[subprocess.Popen, str]:
    """``hpo storage-proxy`` on a free loopback port, the database URL in its environment."""
    port = _free_port()
    with open(log, "w") as handle:
        proxy = subprocess.Popen([sys.executable, "-m", "hpo.cli", "storage-proxy",
                                  "--port", str(port)], stdout=handle, stderr=subprocess.STDOUT,
                                 env={**os.environ, "HPO_STORAGE": url, "PYTHONPATH": str(REPO)})
    wait_for(lambda: _listening(port) or proxy.poll() is not None, 120,
             what="the storage proxy to listen")
    assert proxy.poll() is None, log.read_text()
    return proxy, f"grpc://127.0.0.1:{port}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("via", ["database", "proxy"])
def test_killed_trial_resumes_from_s3_on_a_worker_with_no_shared_disk(s3, tmp_path,
                                                                      monkeypatch, via):
    for name, value in s3.items():  # the workers' credentials: environment only
        monkeypatch.setenv(name, value)
    url = make_storage("postgresql", tmp_path)  # the test watches the database itself
    proxy = None
    if via == "proxy":
        proxy, workers_url = _start_proxy(url, tmp_path / "proxy.log")
    else:
        workers_url = url
    try:
        # 3 epochs, a checkpoint each: the kill lands after epoch 1's upload, before the end
        a = make_project(tmp_path / "machine_0", n_trials=1, max_epochs=3)
        first = spawn(["study", "rt", "--storage", workers_url, "--artifacts", f"s3://{BUCKET}",
                       "--no-progress"], a, tmp_path / "w0.log")
        victim = wait_for(lambda: _reported_checkpoint(url), 240,
                          what=lambda: "a checkpoint in S3: " + (tmp_path / "w0.log").read_text())
        first.send_signal(signal.SIGKILL)
        first.wait()
        pointer = victim.user_attrs["checkpoint"]
        assert pointer["artifact_id"] in _bucket_keys(s3)
        running = [t.number for t in load(url).get_trials(deepcopy=False)
                   if t.state == TrialState.RUNNING]
        assert running == [victim.number], "the trial ended before the kill"

        # another machine: its own folder, no study file, no --artifacts (the study records
        # s3://BUCKET), nothing of machine_0's disk
        b = tmp_path / "machine_1"
        b.mkdir()
        second = spawn(["worker", "rt", "--storage", workers_url, "--no-progress"], b,
                       tmp_path / "w1.log")
        log = (tmp_path / "w1.log")
        assert finish(second, 240) == 0, log.read_text()[-3000:]
        assert f"checkpoints: s3://{BUCKET} (from the study record)" in log.read_text()

        trials = load(url).get_trials(deepcopy=False)
        killed = trials[victim.number]
        assert killed.state == TrialState.FAIL
        [final] = [t for t in trials if t.state == TrialState.COMPLETE]
        assert final.params == killed.params
        resumed = final.user_attrs["resumed"]
        assert resumed["from_trial"] == killed.number
        assert resumed["epoch"] == killed.user_attrs["checkpoint"]["epoch"] >= 1
        assert sorted(final.intermediate_values) == [1, 2, 3]
        # re-reported from the checkpoint (a newer epoch's may have been uploaded, not reported,
        # between our look and the kill)
        for step in range(1, min(resumed["epoch"], max(killed.intermediate_values)) + 1):
            assert final.intermediate_values[step] == pytest.approx(
                killed.intermediate_values[step])
        assert final.user_attrs["checkpoint"]["artifact_id"] in _bucket_keys(s3)
        # no checkpoint touched either machine's disk
        for machine in (a, b):
            assert not list(machine.rglob("*.pt")), list(machine.rglob("*.pt"))
        for name in ("w0.log", "w1.log"):
            text = (tmp_path / name).read_text()
            assert PASSWORD not in text and s3["AWS_SECRET_ACCESS_KEY"] not in text
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait()
        drop_storage(url)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", ["no bucket", "bad key", "unreachable"])
def test_bucket_credentials_and_endpoint_errors_are_one_line(s3, tmp_path, monkeypatch, capfd,
                                                             case):
    env, location, code, said = {
        "no bucket": ({**s3}, "s3://no-such-bucket", 2, "no such bucket at "),
        "bad key": ({**s3, "AWS_SECRET_ACCESS_KEY": "wrong"}, f"s3://{BUCKET}", 2,
                    "access denied at "),
        "unreachable": ({**s3, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}"},
                        f"s3://{BUCKET}", 75, "unreachable at http://127.0.0.1:"),
    }[case]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(make_project(tmp_path / "p", n_trials=1, max_epochs=1))
    rc = main(["study", "rt", "--no-progress", "--storage", f"sqlite:///{tmp_path / 'hpo.db'}",
               "--artifacts", location])
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert rc == code, (case, err)
    assert len(lines) == 1 and lines[0].startswith(f"hpo: error: artifact store {location}")
    assert said in lines[0], (case, lines)
    assert env["AWS_SECRET_ACCESS_KEY"] not in out + err
    assert "trial" not in out.split("storage", 1)[1], out  # stopped before any trial
