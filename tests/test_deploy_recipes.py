"""The launch recipes under deploy/: every file parses, every hpo command in them is one the real
CLI parser accepts, no secret reaches a command line, and stopping a worker leaves it time to
save its trial (grace periods and Slurm's --signal longer than one checkpoint save, the
assumption deploy/README.md states). No container runtime or cluster is needed.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from hpo.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
REPO = DEPLOY.parent
SECRET_WORDS = ("change-me", "PASSWORD", "SECRET")
K8S_OLDEST = "1.33.0"  # Indexed Jobs with backoffLimitPerIndex (GA), as deploy/README.md says


def _checkpoint_save_s() -> int:
    """The longest checkpoint save the recipes are sized for, as deploy/README.md states it."""
    found = re.search(r"checkpoint save takes under (\d+) s", (DEPLOY / "README.md").read_text())
    assert found, "deploy/README.md states how long one checkpoint save may take"
    return int(found.group(1))


def _defaults(text: str) -> str:
    """``${VAR:-default}`` as compose renders it with VAR unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def _parse(argv: list[str], where: str):
    """The CLI's reading of ``hpo ARGV``; a recipe's typo fails here as it would in a pod."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `hpo {shlex.join(argv)}` is refused by the CLI (exit {exc.code})")
    options = re.findall(r"--[\w-]+", _help(args.command))
    for word in argv:
        if word.startswith("--"):  # spelled out: argparse also takes a prefix (--no-prog)
            assert word.split("=")[0] in options, f"{where}: {word} is not an option of hpo"
        assert "@" not in word and not any(s in word for s in SECRET_WORDS), (where, argv)
    assert getattr(args, "storage", None) is None, f"{where}: storage on the command line"
    return args


def _help(command: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return out.getvalue()


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _k8s() -> dict[str, list[dict]]:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d]
            for p in sorted((DEPLOY / "k8s").glob("*.yaml"))}


def _pod_specs() -> list[tuple[str, dict]]:
    specs = []
    for name, docs in _k8s().items():
        for doc in docs:
            if doc["kind"] in ("Deployment", "Job"):
                specs.append((f"{name}:{doc['metadata']['name']}", doc["spec"]["template"]["spec"]))
    return specs


def test_every_yaml_parses_and_the_image_runs_hpo():
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert {p.relative_to(DEPLOY).as_posix() for p in files} >= {
        "compose.yaml", "k8s/proxy.yaml", "k8s/dashboard.yaml", "k8s/workers.yaml",
        "k8s/study-job.yaml", "k8s/secret.example.yaml"}
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path

    docker = (DEPLOY / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in docker.splitlines()
                    if line.strip() and not line.startswith("#")]
    assert instructions[0][0] == "ARG" and instructions[1][0] == "FROM"
    assert {word for word, *_ in instructions} <= {
        "ARG", "FROM", "ENV", "RUN", "WORKDIR", "COPY", "USER", "ENTRYPOINT", "CMD"}
    assert ["ENTRYPOINT", '["hpo"]'] in instructions and ["USER", "hpo"] in instructions
    # torch and torchvision at the versions pyproject.toml pins, from a build-arg wheel index
    pins = [d.replace(" ", "") for d in
            tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
            if d.startswith(("torch==", "torchvision=="))]
    assert len(pins) == 2 and all(pin in docker for pin in pins), pins
    assert "ARG TORCH_INDEX=" in docker and "--index-url ${TORCH_INDEX}" in docker
    # everything it copies exists and is not excluded from the build context
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for word, rest in instructions:
        if word == "COPY":
            for src in rest.split()[:-1]:
                if not src.startswith("--"):
                    assert (REPO / src).exists(), src
                    assert f"!{src}" in ignore or f"!{src}/" in ignore, src
    with pytest.raises(SystemExit) as done:  # the image's default command: `hpo --help`
        build_parser().parse_args(["--help"])
    assert done.value.code == 0


def test_compose_services_run_real_commands_with_secrets_in_env_files_only():
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"postgres", "proxy", "study", "worker", "dashboard"}
    commands = {}
    for name, service in services.items():
        for dep in service.get("depends_on", []):
            assert dep in services, (name, dep)
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"], (name, volume)
        for value in (service.get("environment") or {}).values():
            assert "@" not in str(value), (name, value)  # no credentials inline
        if name != "postgres":
            assert service["image"].startswith("${HPO_IMAGE")
            argv = [_defaults(word) for word in service["command"]]
            commands[name] = _parse(argv, f"compose.yaml {name}")
    assert commands["proxy"].command == "storage-proxy"
    assert (commands["proxy"].host, commands["proxy"].port) == ("0.0.0.0", 13000)
    assert commands["study"].command == "study" and commands["worker"].command == "worker"
    assert commands["dashboard"].command == "dashboard" and commands["dashboard"].read_only
    for name in ("study", "worker"):  # through the proxy: no database password in the workers
        assert services[name]["environment"]["HPO_STORAGE"] == "grpc://proxy:13000"
        assert "env_file" not in services[name]
    assert services["worker"]["deploy"]["replicas"] == "${HPO_WORKERS:-2}"
    for name in ("proxy", "dashboard", "postgres"):
        assert services[name]["env_file"] == ["db.env"]
    assert services["dashboard"]["ports"] == ["127.0.0.1:8080:8080"]
    # the example env file: one password, the same for the server and the URL
    env = dict(line.split("=", 1) for line in (DEPLOY / "db.env.example").read_text().splitlines()
               if line and not line.startswith("#"))
    assert f":{env['POSTGRES_PASSWORD']}@postgres:5432/{env['POSTGRES_DB']}" in env["HPO_STORAGE"]
    assert (DEPLOY / ".gitignore").read_text().split()[-1] == "*.env"


def test_compose_file_matches_the_compose_spec():
    """Docker's own schema (vendored by check-jsonschema): a misspelt key fails here."""
    check = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                            "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_kubernetes_pods_run_real_commands_with_credentials_from_secrets():
    docs = _k8s()
    secrets = {d["metadata"]["name"]: set(d["stringData"]) for d in docs["secret.example.yaml"]}
    save_s = _checkpoint_save_s()
    seen = {}
    for where, spec in _pod_specs():
        [container] = spec["containers"]
        assert "command" not in container  # the image's entrypoint: hpo
        args = _parse(container["args"], where)
        seen[args.command] = (spec, container)
        for env in container.get("env", []):
            if "value" in env:
                assert "@" not in env["value"], (where, env)
                assert not any(s in env["name"] for s in ("PASSWORD", "SECRET", "KEY")), env
            else:
                ref = env["valueFrom"]["secretKeyRef"]
                assert ref["key"] in secrets[ref["name"]], (where, ref)
    assert set(seen) == {"storage-proxy", "dashboard", "study", "worker"}
    for command in ("study", "worker"):  # stopped pods save their trial before SIGKILL
        spec, container = seen[command]
        assert spec["terminationGracePeriodSeconds"] > save_s
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["HPO_STORAGE"] == "grpc://hpo-proxy:13000"
        assert env["HPO_ARTIFACTS"].startswith("s3://")  # no shared disk between nodes
    proxy_env = {e["name"]: e for e in seen["storage-proxy"][1]["env"]}
    assert proxy_env["HPO_STORAGE"]["valueFrom"]["secretKeyRef"]["name"] == "hpo-db"

    [job] = docs["workers.yaml"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    ignored = {code for rule in job["spec"]["podFailurePolicy"]["rules"]
               for code in rule.get("onExitCodes", {}).get("values", [])}
    assert ignored == {75, 143}  # storage unreachable, SIGTERM: start again, uncounted
    # each Service selects a Deployment's pods and names one of its ports
    deployments = {d["metadata"]["name"]: d for ds in docs.values() for d in ds
                   if d["kind"] == "Deployment"}
    services = [d for ds in docs.values() for d in ds if d["kind"] == "Service"]
    assert len(services) == 2
    for service in services:
        [target] = [d for d in deployments.values()
                    if d["spec"]["template"]["metadata"]["labels"] == service["spec"]["selector"]]
        ports = {p["name"] for p in target["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    assert seen["storage-proxy"][1]["ports"][0]["containerPort"] == 13000


@pytest.mark.parametrize("version", [K8S_OLDEST, kubernetes_validate.latest_version()])
def test_kubernetes_manifests_match_the_api_schemas(version):
    """Strict: a misspelt or misplaced field (which kubectl would reject) fails here."""
    errors = []
    for name, docs in _k8s().items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"deploy/k8s/{name} {doc['kind']} {doc['metadata']['name']}: "
                              f"{exc.message} at {list(exc.path)}")
    assert not errors, f"Kubernetes {version}: " + "; ".join(errors)


def test_slurm_array_gets_sigterm_before_the_time_limit():
    script = DEPLOY / "slurm" / "hpo-workers.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    [signal_line] = [line for line in text.splitlines() if line.startswith("#SBATCH --signal=")]
    found = re.fullmatch(r"#SBATCH --signal=(B:)?TERM@(\d+)", signal_line)
    assert found and int(found.group(2)) > _checkpoint_save_s(), signal_line
    assert not found.group(1)  # to the job step (srun): hpo itself gets it, not the batch shell
    assert any(line.startswith("#SBATCH --array=") for line in text.splitlines())
    commands = []
    for line in text.splitlines():
        if "srun hpo " in line:
            argv = shlex.split(line.split("srun hpo ", 1)[1].replace('"$HPO_STUDY"', "mobilenet"))
            commands.append(_parse(argv, f"{script.name}: {line.strip()}").command)
    assert commands == ["study", "worker"]
    compose = _compose()["services"]
    for name in ("study", "worker"):
        grace = re.fullmatch(r"(\d+)m", compose[name]["stop_grace_period"])
        assert grace and int(grace.group(1)) * 60 > _checkpoint_save_s()


def test_only_the_hpo_pods_may_reach_the_proxy():
    docs = _k8s()
    [policy] = [d for d in docs["proxy.yaml"] if d["kind"] == "NetworkPolicy"]
    [deployment] = [d for d in docs["proxy.yaml"] if d["kind"] == "Deployment"]
    assert policy["spec"]["podSelector"]["matchLabels"] == \
        deployment["spec"]["template"]["metadata"]["labels"]
    [source] = policy["spec"]["ingress"][0]["from"]
    for name in ("study-job.yaml", "workers.yaml"):
        [job] = docs[name]
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert source["podSelector"]["matchLabels"].items() <= labels.items(), name
