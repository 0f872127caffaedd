"""The manifests in deploy/ agree with the watchdog settings they set.

Each manifest's environment is parsed with the watchdog's own option table, and the fields that
depend on those settings (ports, probes, grace periods, concurrency) are checked against the
parsed values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import watchdog
from tests.helpers import base_environment, run_watchdog
from watchdog.config import OPTIONS, Config, load_config
from watchdog.server import ORPHAN_GRACE

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
IMAGE = f"fwatchdog:{watchdog.__version__}"
HEALTH_PATH = "/_/health"
# OpenFaaS sends every request to this port of the function container.
OPENFAAS_FUNCTION_PORT = 8080
# OSCAR sets this variable in every service container; auth_token reads it.
OSCAR_TOKEN_VARIABLE = "OSCAR_SERVICE_TOKEN"
OPTION_NAMES = {option.name for option in OPTIONS} | {option.alias for option in OPTIONS}


def _load(name: str) -> list[dict[str, Any]]:
    with open(DEPLOY / name) as file:
        return [document for document in yaml.safe_load_all(file) if document]


def _kind(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = [document for document in documents if document["kind"] == kind]
    assert len(matching) == 1, f"expected one {kind}"
    return matching[0]


def _container_environment(container: dict[str, Any]) -> dict[str, str]:
    environment = {}
    for variable in container["env"]:
        assert isinstance(variable["value"], str), f"{variable['name']} must be a string in YAML"
        environment[variable["name"]] = variable["value"]
    return environment


def _shutdown_seconds(config: Config) -> float:
    """Return the longest time from SIGTERM to exit: serving, draining, then stopping orphans."""
    return config.shutdown_interval + config.write_timeout + ORPHAN_GRACE


def _kubernetes() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    documents = _load("kubernetes.yaml")
    deployment = _kind(documents, "Deployment")
    service = _kind(documents, "Service")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, service, container


def _knative() -> tuple[dict[str, Any], dict[str, Any]]:
    (service,) = _load("knative.yaml")
    assert service["apiVersion"] == "serving.knative.dev/v1"
    assert service["kind"] == "Service"
    spec = service["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def _openfaas() -> dict[str, Any]:
    (stack,) = _load("stack.yml")
    assert stack["provider"]["name"] == "openfaas"
    (function,) = stack["functions"].values()
    return dict(function)


def _oscar() -> dict[str, Any]:
    (fdl,) = _load("oscar.yaml")
    (entry,) = fdl["functions"]["oscar"]
    (service,) = entry.values()
    return dict(service)


PLATFORMS = ["kubernetes", "knative", "openfaas", "oscar"]


def _environment(platform: str) -> dict[str, str]:
    """Return the watchdog's environment variables as the platform's manifest sets them."""
    if platform == "kubernetes":
        return _container_environment(_kubernetes()[2])
    if platform == "knative":
        return _container_environment(_knative()[1])
    if platform == "openfaas":
        return dict(_openfaas()["environment"])
    return dict(_oscar()["environment"]["variables"])


def _image(platform: str) -> str:
    if platform == "kubernetes":
        return str(_kubernetes()[2]["image"])
    if platform == "knative":
        return str(_knative()[1]["image"])
    if platform == "openfaas":
        return str(_openfaas()["image"])
    return str(_oscar()["image"])


def _config(platform: str) -> Config:
    return load_config({**_environment(platform), OSCAR_TOKEN_VARIABLE: "token"})


@pytest.mark.parametrize("platform", PLATFORMS)
def test_environment_names_are_options(platform: str) -> None:
    environment = _environment(platform)
    unknown = sorted(set(environment) - OPTION_NAMES)
    assert unknown == [], f"not watchdog options: {unknown}"
    assert "fprocess" in environment


@pytest.mark.parametrize("platform", PLATFORMS)
def test_environment_passes_check_config(platform: str, tmp_path: Path) -> None:
    environment = base_environment(tmp_path)
    environment |= _environment(platform)
    environment[OSCAR_TOKEN_VARIABLE] = "token"
    result = run_watchdog(environment, "--check-config")
    assert result.returncode == 0, result.stderr
    printed = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert printed == load_config(environment).describe()


@pytest.mark.parametrize("platform", PLATFORMS)
def test_exec_timeout_ends_before_write_timeout(platform: str) -> None:
    # With exec_timeout at or past write_timeout the client gets 504 before the process is killed.
    config = _config(platform)
    assert 0 < config.exec_timeout < config.write_timeout


@pytest.mark.parametrize("platform", PLATFORMS)
def test_image_is_current_version(platform: str) -> None:
    assert _image(platform) == IMAGE


def test_kubernetes_ports_match_settings() -> None:
    deployment, service, container = _kubernetes()
    config = load_config(_container_environment(container))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": config.port, "metrics": config.metrics_port}

    targets = {port["name"]: port["targetPort"] for port in service["spec"]["ports"]}
    assert targets == {"http": config.port, "metrics": config.metrics_port}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize("probe_name", ["readinessProbe", "livenessProbe"])
def test_kubernetes_probe_uses_health(probe_name: str) -> None:
    container = _kubernetes()[2]
    config = load_config(_container_environment(container))
    probe = container[probe_name]["httpGet"]
    assert probe["path"] == HEALTH_PATH
    assert probe["port"] == config.port


def test_kubernetes_readiness_fails_within_interval() -> None:
    container = _kubernetes()[2]
    config = load_config(_container_environment(container))
    probe = container["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= config.shutdown_interval


def test_kubernetes_liveness_outlasts_shutdown() -> None:
    container = _kubernetes()[2]
    config = load_config(_container_environment(container))
    probe = container["livenessProbe"]
    failing_for = probe["periodSeconds"] * probe["failureThreshold"]
    assert failing_for > config.shutdown_interval + config.write_timeout


def test_kubernetes_grace_period_covers_shutdown() -> None:
    deployment, _, container = _kubernetes()
    config = load_config(_container_environment(container))
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > _shutdown_seconds(config)


def test_kubernetes_runs_as_image_user() -> None:
    deployment = _kubernetes()[0]
    match = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "the Dockerfile has no numeric USER line"
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == int(match.group(1))
    assert security["runAsGroup"] == int(match.group(2))


def test_kubernetes_tmp_writable_with_read_only_root() -> None:
    container = _kubernetes()[2]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = [mount["mountPath"] for mount in container["volumeMounts"]]
    assert "/tmp" in mounts


def test_knative_concurrency_equals_max_inflight() -> None:
    spec, container = _knative()
    config = load_config(_container_environment(container))
    assert config.max_inflight > 0
    assert spec["containerConcurrency"] == config.max_inflight


def test_knative_port_and_probe_match_settings() -> None:
    _, container = _knative()
    config = load_config(_container_environment(container))
    (port,) = container["ports"]
    assert port["containerPort"] == config.port
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == HEALTH_PATH
    assert probe.get("port", config.port) == config.port


def test_knative_timeout_covers_shutdown() -> None:
    # Knative uses timeoutSeconds both as the request timeout and as the grace period.
    spec, container = _knative()
    config = load_config(_container_environment(container))
    assert spec["timeoutSeconds"] >= config.write_timeout
    assert spec["timeoutSeconds"] > _shutdown_seconds(config)


def test_openfaas_function_uses_default_port() -> None:
    function = _openfaas()
    config = load_config(function["environment"])
    assert config.port == OPENFAAS_FUNCTION_PORT
    assert function["skip_build"] is True


def test_oscar_service_runs_script_in_oscar_mode() -> None:
    service = _oscar()
    for field in ("name", "image", "script"):
        assert service[field], f"the OSCAR service has no {field}"
    assert (DEPLOY / service["script"]).is_file()
    config = _config("oscar")
    assert config.io_mode == "oscar"
    assert config.fprocess == ("/bin/sh", "/oscar/config/script.sh")
    assert config.auth_token == "token"
