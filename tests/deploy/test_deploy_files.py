"""Static checks of the operator-facing deployment files: the services' Dockerfiles, the Asterisk
image (deploy/asterisk), docker-compose.yml and the kustomize base in deploy/k8s (and how both
wire ClickHouse and Grafana to the provisioning files of deploy/grafana, the media service to
MinIO, and the call-flow service to Asterisk).

Nothing is built, started or fetched: the Kubernetes manifests are rendered with
``kubectl kustomize`` (or, where kubectl is not installed, read from the files the kustomization
lists) and validated against the schemas that ``kubernetes-validate`` ships; docker-compose.yml is
validated against the compose-spec schema that ``check-jsonschema`` ships; the Dockerfiles are
linted by the small rules below; the ClickHouse users file (inline in docker-compose.yml, a
ConfigMap in deploy/k8s) is parsed and matched against the settings that use it. The Asterisk
image's entrypoint (plain sh) is run on the configuration templates in a temporary folder, with a
stand-in for the asterisk binary."""

from __future__ import annotations

import importlib
import importlib.resources
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from scripts import asterisk as local_asterisk

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
GRAFANA_DATASOURCE = GRAFANA_DIR / "provisioning" / "datasources" / "clickhouse.yaml"
GRAFANA_PROVISIONING_CONTAINER_DIR = "/etc/grafana/provisioning"
CLICKHOUSE_USERS_D = "/etc/clickhouse-server/users.d/"
DOCKERIGNORE = ROOT / ".dockerignore"
ASTERISK_DIR = ROOT / "deploy" / "asterisk"
ASTERISK_DOCKERFILE = ASTERISK_DIR / "Dockerfile"
ASTERISK_ENTRYPOINT = ASTERISK_DIR / "entrypoint.sh"
ASTERISK_TEMPLATES = ASTERISK_DIR / "etc"
K8S_VERSION = "1.30"
NAMESPACE = "switchboard"

# The Python services that have images: service dir name -> (settings module, env prefix).
SERVICES = {
    "config": ("switchboard_config.settings", "SB_CONFIG_"),
    "gateway": ("switchboard_gateway.settings", "SB_GATEWAY_"),
    "cdr": ("switchboard_cdr.settings", "SB_CDR_"),
    "media": ("switchboard_media.settings", "SB_MEDIA_"),
    "callflow": ("switchboard_callflow.settings", "SB_CALLFLOW_"),
}
# MinIO's images left Docker Hub with the archived community edition: pinned from quay.io.
MINIO_IMAGE_PREFIX = "quay.io/minio/minio:RELEASE."
MINIO_HEALTHCHECKS = {"mc ready local", "curl -f http://127.0.0.1:9000/minio/health/live"}
CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}


# ---------------------------------------------------------------------------------------------
# Kubernetes


def _yaml_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _kustomization() -> dict[str, Any]:
    kustomization: dict[str, Any] = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    return kustomization


def _load_base_without_kubectl() -> list[dict[str, Any]]:
    """What ``kubectl kustomize`` would emit for this base, minus labels and image rewrites:
    the listed resource files, with the kustomization's namespace applied."""
    kustomization = _kustomization()
    unsupported = {"components", "patches", "configMapGenerator", "secretGenerator", "helmCharts"}
    assert not unsupported & kustomization.keys(), (
        f"the kubectl-less fallback of this test does not render {sorted(unsupported & kustomization.keys())}; "
        "install kubectl or extend _load_base_without_kubectl"
    )
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        path = K8S_DIR / resource
        assert path.is_file(), f"kustomization.yaml lists {resource}, which is not a file in deploy/k8s"
        docs.extend(_yaml_docs(path.read_text()))
    namespace = kustomization.get("namespace")
    for doc in docs:
        if namespace and doc["kind"] not in CLUSTER_SCOPED_KINDS:
            doc["metadata"]["namespace"] = namespace
    return docs


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        warnings.warn(
            "kubectl is not installed: checking deploy/k8s from its files, without kustomize rendering",
            stacklevel=1,
        )
        return _load_base_without_kubectl()
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize deploy/k8s failed:\n{result.stderr}"
    return _yaml_docs(result.stdout)


def _find(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in manifests:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind}/{name} in the rendered manifests")


def _workloads(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in manifests if doc["kind"] in WORKLOAD_KINDS]


def _containers(workload: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    pod = workload["spec"]["template"]["spec"]
    for container in pod.get("initContainers", []) + pod["containers"]:
        yield f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}", container


def _validate_k8s(doc: dict[str, Any]) -> str | None:
    """None when valid; otherwise why not. A kind without a shipped schema is an error here
    (the base has no custom resources), where the CLI would only warn."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        return f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}"
    except SchemaNotFoundError as exc:
        return f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}"
    return None


def test_kustomize_renders_the_expected_resources(manifests: list[dict[str, Any]]) -> None:
    present = {(doc["kind"], doc["metadata"]["name"]) for doc in manifests}
    expected = {
        ("Namespace", NAMESPACE),
        ("ConfigMap", "switchboard-settings"),
        ("ConfigMap", "nats-config"),
        ("StatefulSet", "nats"),
        ("Service", "nats"),
        ("Service", "nats-headless"),
        ("Deployment", "config"),
        ("Deployment", "gateway"),
        ("Service", "gateway"),
        ("ConfigMap", "clickhouse-users"),
        ("StatefulSet", "clickhouse"),
        ("Service", "clickhouse"),
        ("Service", "clickhouse-headless"),
        ("Deployment", "cdr"),
        ("StatefulSet", "minio"),
        ("Service", "minio"),
        ("Service", "minio-headless"),
        ("Deployment", "media"),
        ("PodDisruptionBudget", "media"),
        ("Deployment", "callflow"),
        ("Service", "sip"),
    }
    assert expected <= present, f"missing: {sorted(expected - present)}"
    assert not any(kind == "Secret" for kind, _ in present), "real Secrets must not be in the base"
    for doc in manifests:
        if doc["kind"] not in CLUSTER_SCOPED_KINDS:
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"


def test_manifests_match_kubernetes_schemas(manifests: list[dict[str, Any]]) -> None:
    errors = [error for doc in manifests if (error := _validate_k8s(doc))]
    assert not errors, "\n".join(errors)


def test_validator_rejects_a_broken_manifest(manifests: list[dict[str, Any]]) -> None:
    """The schema check is real: a misspelled field and a wrong type are both caught."""
    broken = json.loads(json.dumps(_find(manifests, "Deployment", "gateway")))
    broken["spec"]["replicas"] = "two"
    assert _validate_k8s(broken)
    broken = json.loads(json.dumps(_find(manifests, "Deployment", "gateway")))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    assert _validate_k8s(broken)


def test_secret_example_is_valid_and_not_in_the_base() -> None:
    assert "secret.example.yaml" not in _kustomization()["resources"]
    (secret,) = _yaml_docs((K8S_DIR / "secret.example.yaml").read_text())
    assert _validate_k8s(secret) is None
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["namespace"] == NAMESPACE


def test_every_container_has_probes_limits_and_a_locked_down_context(manifests: list[dict[str, Any]]) -> None:
    workloads = _workloads(manifests)
    assert {w["metadata"]["name"] for w in workloads} >= {
        "nats",
        "config",
        "gateway",
        "clickhouse",
        "cdr",
        "minio",
        "media",
        "callflow",
    }
    problems = []
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        pod_security = pod.get("securityContext", {})
        for where, container in _containers(workload):
            security = container.get("securityContext", {})
            for probe in ("livenessProbe", "readinessProbe"):
                if not container.get(probe):
                    problems.append(f"{where}: no {probe}")
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(section, {}):
                        problems.append(f"{where}: no resources.{section}.{resource}")
            if not security.get("runAsNonRoot", pod_security.get("runAsNonRoot")):
                problems.append(f"{where}: runAsNonRoot is not set")
            if security.get("runAsUser", pod_security.get("runAsUser")) in (None, 0):
                problems.append(f"{where}: no non-zero runAsUser (runAsNonRoot cannot verify a named USER)")
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem is writable")
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in security.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: capabilities are not all dropped")
            image = container["image"]
            if "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
                problems.append(f"{where}: image {image} is not pinned to a tag")
    assert not problems, "\n".join(problems)


def test_probes_and_services_point_at_declared_ports(manifests: list[dict[str, Any]]) -> None:
    problems = []
    pods_by_labels = []
    for workload in _workloads(manifests):
        template = workload["spec"]["template"]
        labels = template["metadata"]["labels"]
        selector = workload["spec"]["selector"]["matchLabels"]
        if not selector.items() <= labels.items():
            problems.append(f"{workload['metadata']['name']}: selector does not match its pod labels")
        ports: set[str | int] = set()
        for where, container in _containers(workload):
            declared = {p.get("name") for p in container.get("ports", [])} | {
                p["containerPort"] for p in container.get("ports", [])
            }
            ports |= declared
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                http = container.get(probe, {}).get("httpGet")
                if http and http["port"] not in declared:
                    problems.append(f"{where}: {probe} port {http['port']} is not a container port")
        pods_by_labels.append((labels, ports))
    for service in (doc for doc in manifests if doc["kind"] == "Service"):
        name = service["metadata"]["name"]
        matches = [
            ports for labels, ports in pods_by_labels if service["spec"]["selector"].items() <= labels.items()
        ]
        if not matches:
            problems.append(f"Service/{name}: its selector matches no workload")
            continue
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if not any(target in ports for ports in matches):
                problems.append(f"Service/{name}: targetPort {target} is not a port of its pods")
    assert not problems, "\n".join(problems)


def test_config_is_a_single_writer_and_gateway_scales(manifests: list[dict[str, Any]]) -> None:
    config = _find(manifests, "Deployment", "config")
    assert config["spec"]["replicas"] == 1
    assert config["spec"]["strategy"]["type"] == "Recreate"
    gateway = _find(manifests, "Deployment", "gateway")
    assert gateway["spec"]["replicas"] == 2


def test_nats_keeps_jetstream_on_a_persistent_volume(manifests: list[dict[str, Any]]) -> None:
    nats = _find(manifests, "StatefulSet", "nats")
    assert nats["spec"]["serviceName"] == "nats-headless"
    assert _find(manifests, "Service", "nats-headless")["spec"]["clusterIP"] == "None"
    claims = {claim["metadata"]["name"] for claim in nats["spec"]["volumeClaimTemplates"]}
    (container,) = nats["spec"]["template"]["spec"]["containers"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    nats_conf = _find(manifests, "ConfigMap", "nats-config")["data"]["nats.conf"]
    store_dir = re.search(r"store_dir:\s*(\S+)", nats_conf)
    assert store_dir, "nats.conf has no jetstream store_dir"
    assert mounts.get(store_dir.group(1)) in claims, "the JetStream store_dir is not on a PVC"
    config_arg = container["args"][container["args"].index("--config") + 1]
    assert mounts.get(str(Path(config_arg).parent)) == "config"


def test_env_references_resolve_and_match_the_services_settings(manifests: list[dict[str, Any]]) -> None:
    (secret,) = _yaml_docs((K8S_DIR / "secret.example.yaml").read_text())
    secret_keys = {(secret["metadata"]["name"], key) for key in secret["stringData"]}
    config_keys = {
        (doc["metadata"]["name"], key)
        for doc in manifests
        if doc["kind"] == "ConfigMap"
        for key in doc["data"]
    }
    assert set(SERVICES) <= {
        w["metadata"]["name"] for w in _workloads(manifests) if w["kind"] == "Deployment"
    }
    problems = []
    for workload in _workloads(manifests):
        name = workload["metadata"]["name"]
        for where, container in _containers(workload):
            env = container.get("env", [])
            if name in SERVICES:
                problems += _unknown_settings(name, [var["name"] for var in env], where)
            for var in env:
                source = var.get("valueFrom", {})
                for ref_kind, known in (("secretKeyRef", secret_keys), ("configMapKeyRef", config_keys)):
                    ref = source.get(ref_kind)
                    if ref and (ref["name"], ref["key"]) not in known:
                        problems.append(
                            f"{where}: {var['name']}: {ref_kind} {ref['name']}/{ref['key']} does not exist"
                        )
    assert not problems, "\n".join(problems)


def _env_values(manifests: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """A container's environment, resolved: a plain value, a ConfigMap's value, or
    ``secret:<Secret>/<key>`` for a Secret's (whose value is not in the base)."""
    values = {}
    for var in container.get("env", []):
        source = var.get("valueFrom", {})
        if "value" in var:
            values[var["name"]] = var["value"]
        elif ref := source.get("configMapKeyRef"):
            values[var["name"]] = _find(manifests, "ConfigMap", ref["name"])["data"][ref["key"]]
        elif ref := source.get("secretKeyRef"):
            values[var["name"]] = f"secret:{ref['name']}/{ref['key']}"
    return values


def _container_port(container: dict[str, Any], port: str | int) -> int:
    for declared in container.get("ports", []):
        if port in (declared.get("name"), declared["containerPort"]):
            return int(declared["containerPort"])
    raise AssertionError(f"container {container['name']} has no port {port}")


def _service_target(manifests: list[dict[str, Any]], host: str, port: int) -> tuple[dict[str, Any], int]:
    """The workload container port that ``host:port`` (a Service of the base) reaches."""
    service = _find(manifests, "Service", host)
    (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == port] or [None]
    assert service_port, f"Service/{host} has no port {port}"
    for workload in _workloads(manifests):
        if service["spec"]["selector"].items() <= workload["spec"]["template"]["metadata"]["labels"].items():
            for _, container in _containers(workload):
                try:
                    return workload, _container_port(container, service_port.get("targetPort", port))
                except AssertionError:
                    continue
    raise AssertionError(f"Service/{host} port {port} reaches no container port")


def _clickhouse_container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _find(manifests, "StatefulSet", "clickhouse")["spec"]["template"][
        "spec"
    ]["containers"]
    (container,) = containers
    return container


def test_cdr_runs_one_replica_against_the_clickhouse_server(manifests: list[dict[str, Any]]) -> None:
    cdr = _find(manifests, "Deployment", "cdr")
    assert cdr["spec"]["replicas"] == 1, "the search subscriber has no queue group: see cdr.yaml"
    (container,) = cdr["spec"]["template"]["spec"]["containers"]
    env = _env_values(manifests, container)
    assert env["SB_CDR_BACKEND"] == "server", "the embedded chDB store would live and die with the pod"
    assert env["SB_CDR_NATS_URL"] == "nats://nats:4222"
    assert int(env["SB_CDR_HTTP_PORT"]) == _container_port(container, "http")
    workload, port = _service_target(
        manifests, env["SB_CDR_CLICKHOUSE_HOST"], int(env["SB_CDR_CLICKHOUSE_PORT"])
    )
    assert (workload["kind"], workload["metadata"]["name"]) == ("StatefulSet", "clickhouse")
    assert port == 9000, "the cdr service speaks ClickHouse's native protocol (9000), not HTTP"
    assert env["SB_CDR_CLICKHOUSE_PASSWORD"].startswith("secret:"), "the password must come from a Secret"


def test_clickhouse_keeps_its_data_on_a_persistent_volume(manifests: list[dict[str, Any]]) -> None:
    clickhouse = _find(manifests, "StatefulSet", "clickhouse")
    assert _find(manifests, "Service", clickhouse["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    claims = {claim["metadata"]["name"] for claim in clickhouse["spec"]["volumeClaimTemplates"]}
    container = _clickhouse_container(manifests)
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert mounts["/var/lib/clickhouse"]["name"] in claims, "ClickHouse's data path is not on a PVC"
    # The image's entrypoint writes users.d files into /etc and chowns as root: neither works with
    # a read-only root filesystem and runAsNonRoot, so the server is started directly.
    assert container["command"][0].endswith("/clickhouse-server")
    assert container.get("workingDir") == "/var/lib/clickhouse"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] == "/ping"
        assert _container_port(container, http["port"]) == 8123
    assert _container_port(container, "native") == 9000
    assert not container["image"].endswith(":latest")
    assert container["image"].startswith("clickhouse/clickhouse-server:")


def test_clickhouse_users_come_from_the_configmap_and_the_secret(manifests: list[dict[str, Any]]) -> None:
    container = _clickhouse_container(manifests)
    pod = _find(manifests, "StatefulSet", "clickhouse")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    (users_mount,) = [m for m in container["volumeMounts"] if m["mountPath"].startswith(CLICKHOUSE_USERS_D)]
    config_map = volumes[users_mount["name"]]["configMap"]["name"]
    assert config_map == "clickhouse-users"
    assert users_mount["subPath"] in _find(manifests, "ConfigMap", config_map)["data"]
    assert users_mount["mountPath"].endswith(".xml")
    env = _env_values(manifests, container)
    users = _clickhouse_users(_k8s_clickhouse_users(manifests))
    for user, (variable, _) in users.items():
        assert env.get(variable, "").startswith("secret:"), (
            f"{user}: password {variable} is not from a Secret"
        )
    # The cdr service logs in as a user of that file, with the password that user reads.
    (cdr,) = _find(manifests, "Deployment", "cdr")["spec"]["template"]["spec"]["containers"]
    cdr_env = _env_values(manifests, cdr)
    user = cdr_env["SB_CDR_CLICKHOUSE_USER"]
    assert user in users, f"the cdr service logs in as {user}, which clickhouse-users does not define"
    assert cdr_env["SB_CDR_CLICKHOUSE_PASSWORD"] == env[users[user][0]]
    assert users[user][1] is None, "the cdr service needs a user that may write"
    # Grafana's read-only user may read the cdr service's database.
    readers = {
        name for name, (_, database) in users.items() if database == cdr_env["SB_CDR_CLICKHOUSE_DATABASE"]
    }
    assert "grafana" in readers, "the grafana user may not read the cdr service's database"


def _single_container(
    manifests: list[dict[str, Any]], kind: str, name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    workload = _find(manifests, kind, name)
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return workload, container


def _mounted_volume(workload: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The pod volume (or the StatefulSet's claim, as ``{"persistentVolumeClaim": ...}``) that holds
    ``path`` in ``container``: the one mounted there or at the nearest folder above it."""
    pod = workload["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for claim in workload["spec"].get("volumeClaimTemplates", []):
        volumes[claim["metadata"]["name"]] = {"persistentVolumeClaim": claim["spec"]}
    best: tuple[int, str] | None = None
    for mount in container.get("volumeMounts", []):
        mount_path = mount["mountPath"].rstrip("/") or "/"
        holds = path == mount_path or path.startswith(mount_path.rstrip("/") + "/")
        if holds and (best is None or len(mount_path) > best[0]):
            best = (len(mount_path), mount["name"])
    return volumes.get(best[1]) if best else None


def _cli_flags(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Positional arguments and ``--flag value`` / ``--flag=value`` options of a command line."""
    positional: list[str] = []
    flags: dict[str, str] = {}
    words = iter(args)
    for word in words:
        if word.startswith("--"):
            name, equals, value = word.partition("=")
            flags[name] = value if equals else next(words, "")
        else:
            positional.append(word)
    return positional, flags


def _port_of(address: str) -> int:
    """The port of a listen address such as ``:9001`` or ``0.0.0.0:9001``."""
    return int(address.rpartition(":")[2])


def _media_subscribers() -> list[Any]:
    """The NATS subscribers of the media service as its composition root builds them (nothing
    connects)."""
    module = importlib.import_module("switchboard_media.main")
    settings = importlib.import_module(SERVICES["media"][0]).Settings()
    _, broker = module.build(settings)
    subscribers: list[Any] = list(broker.subscribers)
    return subscribers


def test_minio_keeps_its_data_on_a_persistent_volume(manifests: list[dict[str, Any]]) -> None:
    minio, container = _single_container(manifests, "StatefulSet", "minio")
    assert container["image"].startswith(MINIO_IMAGE_PREFIX), (
        f"MinIO's image must be pinned from quay.io ({MINIO_IMAGE_PREFIX}...), not {container['image']}"
    )
    assert _find(manifests, "Service", minio["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    positional, flags = _cli_flags(container.get("command", [])[1:] + container.get("args", []))
    assert positional[0] == "server", positional
    data = positional[1]
    assert "persistentVolumeClaim" in (_mounted_volume(minio, container, data) or {}), (
        f"MinIO's data path {data} is not on a PVC"
    )
    # MinIO creates its certificates folder at start; the root filesystem is read-only.
    certs = flags.get("--certs-dir")
    assert certs, "without --certs-dir MinIO creates $HOME/.minio/certs, on the read-only root filesystem"
    assert "emptyDir" in (_mounted_volume(minio, container, certs) or {}), f"{certs} is not writable"
    api = _container_port(container, "api")
    assert api == _port_of(flags.get("--address", ":9000"))
    assert _container_port(container, "console") == _port_of(flags["--console-address"])
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        http = container[probe]["httpGet"]
        assert _container_port(container, http["port"]) == api, f"{probe} does not probe the S3 API port"
        paths[probe] = http["path"]
    assert paths["livenessProbe"] == "/minio/health/live"
    assert paths["readinessProbe"] == "/minio/health/ready"
    env = _env_values(manifests, container)
    for variable in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        assert env.get(variable, "").startswith("secret:"), f"{variable} is not from a Secret"


def test_media_scales_in_a_queue_group_and_reaches_minio(manifests: list[dict[str, Any]]) -> None:
    media, container = _single_container(manifests, "Deployment", "media")
    # Several replicas are safe only while every subscriber is in a queue group (one replica
    # answers each request).
    queues = {subscriber.queue for subscriber in _media_subscribers()}
    assert queues == {"media"}, f"a media subscriber is outside the queue group: {queues}"
    assert media["spec"]["replicas"] >= 2
    pdb = _find(manifests, "PodDisruptionBudget", "media")
    assert (
        pdb["spec"]["selector"]["matchLabels"].items()
        <= media["spec"]["template"]["metadata"]["labels"].items()
    )
    assert pdb["spec"]["minAvailable"] < media["spec"]["replicas"]
    env = _env_values(manifests, container)
    assert env["SB_MEDIA_NATS_URL"] == "nats://nats:4222"
    assert int(env["SB_MEDIA_HTTP_PORT"]) == _container_port(container, "http")
    # The S3 endpoint (host:port) is MinIO's S3 API, with MinIO's root credentials and region.
    host, _, port = env["SB_MEDIA_S3_ENDPOINT"].rpartition(":")
    workload, target = _service_target(manifests, host, int(port))
    assert (workload["kind"], workload["metadata"]["name"]) == ("StatefulSet", "minio")
    _, minio = _single_container(manifests, "StatefulSet", "minio")
    assert target == _container_port(minio, "api"), "the endpoint reaches MinIO's console, not its S3 API"
    minio_env = _env_values(manifests, minio)
    assert env["SB_MEDIA_S3_ACCESS_KEY"].startswith("secret:")
    assert env["SB_MEDIA_S3_ACCESS_KEY"] == minio_env["MINIO_ROOT_USER"]
    assert env["SB_MEDIA_S3_SECRET_KEY"].startswith("secret:")
    assert env["SB_MEDIA_S3_SECRET_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
    assert env["SB_MEDIA_S3_REGION"] == minio_env.get("MINIO_SITE_REGION", "us-east-1")
    assert env["SB_MEDIA_S3_SECURE"].lower() == "false", "MinIO has no certificates here: plain HTTP"
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", env["SB_MEDIA_S3_BUCKET"])
    # Scratch space on an emptyDir (the root filesystem is read-only), pydub's TMPDIR too.
    work_dir = env["SB_MEDIA_WORK_DIR"]
    assert work_dir == _dockerfile_env("media")["SB_MEDIA_WORK_DIR"], "k8s and the image disagree"
    for variable in ("SB_MEDIA_WORK_DIR", "TMPDIR"):
        volume = _mounted_volume(media, container, env[variable]) or {}
        assert volume.get("emptyDir", {}).get("sizeLimit"), f"{variable} is not on a size-limited emptyDir"


def _settings_fields(service: str) -> tuple[str, dict[str, Any]]:
    module_name, prefix = SERVICES[service]
    settings = importlib.import_module(module_name).Settings
    return prefix, {name: info for name, info in settings.model_fields.items()}


def _unknown_settings(service: str, variables: list[str], where: str) -> list[str]:
    prefix, fields = _settings_fields(service)
    return [
        f"{where}: {var} is not a setting of the {service} service"
        for var in variables
        if var.startswith(prefix) and var.removeprefix(prefix).lower() not in fields
    ]


# ---------------------------------------------------------------------------------------------
# ClickHouse users (one file: a ConfigMap in deploy/k8s, an inline config in docker-compose.yml)


def _k8s_clickhouse_users(manifests: list[dict[str, Any]]) -> str:
    text: str = _find(manifests, "ConfigMap", "clickhouse-users")["data"]["switchboard.xml"]
    return text


def _compose_clickhouse_users(compose: dict[str, Any]) -> str:
    (target,) = [
        config
        for config in compose["services"]["clickhouse"].get("configs", [])
        if config["target"].startswith(CLICKHOUSE_USERS_D)
    ]
    text: str = compose["configs"][target["source"]]["content"]
    return text


def _parse_xml(text: str) -> ET.Element:
    return ET.fromstring(text)  # noqa: S314 (the repository's own file)


def _clickhouse_users(text: str) -> dict[str, tuple[str, str | None]]:
    """user -> (the environment variable its password comes from, the one database it may read,
    or None for a user with every privilege). Fails on a password written into the file and on a
    read-only user that is not read-only or may read more than one database."""
    root = _parse_xml(text)
    profiles_element = root.find("profiles")
    profiles = {p.tag: p for p in profiles_element} if profiles_element is not None else {}
    users_element = root.find("users")
    assert users_element is not None, "no <users>"
    users: dict[str, tuple[str, str | None]] = {}
    for user in users_element:
        if user.get("remove") == "remove":
            continue
        for element in user:
            if element.tag.startswith("password"):
                assert element.tag == "password" and element.get("from_env"), (
                    f"{user.tag}: the password must come from the environment (<password from_env=...>)"
                )
                assert not (element.text or "").strip(), f"{user.tag}: a password is written in the file"
        password = user.find("password")
        assert password is not None, f"{user.tag}: no password"
        grants = [(query.text or "").strip() for query in user.findall("grants/query")]
        profile = profiles.get(user.findtext("profile", "default"))
        readonly = profile is not None and profile.findtext("readonly") == "1"
        database = None
        if grants or readonly:
            assert profile is not None and readonly, (
                f"{user.tag}: has grants but its profile is not readonly = 1"
            )
            match = [re.fullmatch(r"GRANT SELECT ON `?(\w+)`?\.\*", grant) for grant in grants]
            assert len(match) == 1 and match[0], (
                f"{user.tag}: expected exactly GRANT SELECT ON <db>.*: {grants}"
            )
            database = match[0].group(1)
            # The Grafana plugin sets max_execution_time on every query; readonly = 1 refuses
            # that unless the setting is changeable_in_readonly.
            assert profile.find("constraints/max_execution_time/changeable_in_readonly") is not None, (
                f"{user.tag}: max_execution_time is not changeable_in_readonly"
            )
        users[user.tag] = (str(password.get("from_env")), database)
    return users


def test_clickhouse_users_are_safe_and_the_same_in_compose_and_k8s(
    manifests: list[dict[str, Any]], compose: dict[str, Any]
) -> None:
    k8s, in_compose = _k8s_clickhouse_users(manifests), _compose_clickhouse_users(compose)
    assert ET.canonicalize(k8s, strip_text=True) == ET.canonicalize(in_compose, strip_text=True), (
        "deploy/k8s/clickhouse.yaml (clickhouse-users) and docker-compose.yml (configs) differ"
    )
    root = _parse_xml(k8s)
    default = root.find("users/default")
    assert default is not None and default.get("remove") == "remove", (
        "the image's passwordless default user must be removed"
    )
    users = _clickhouse_users(k8s)
    assert (
        users["grafana"][1]
        == _find(manifests, "ConfigMap", "switchboard-settings")["data"]["CLICKHOUSE_DATABASE"]
    )
    assert any(database is None for _, database in users.values()), "no user may write (the cdr service)"


def test_clickhouse_users_check_is_real() -> None:
    good = """<clickhouse><profiles><ro><readonly>1</readonly><constraints><max_execution_time>
        <changeable_in_readonly/></max_execution_time></constraints></ro></profiles><users>
        <default remove="remove"/><w><password from_env="W"/></w><r><password from_env="R"/>
        <profile>ro</profile><grants><query>GRANT SELECT ON db.*</query></grants></r></users></clickhouse>"""
    assert _clickhouse_users(good) == {"w": ("W", None), "r": ("R", "db")}
    for broken, message in (
        (good.replace('<password from_env="W"/>', "<password>secret</password>"), "from the environment"),
        (good.replace("<readonly>1</readonly>", ""), "not readonly"),
        (good.replace("<changeable_in_readonly/>", ""), "changeable_in_readonly"),
        (good.replace("SELECT ON db.*", "ALL ON *.*"), "GRANT SELECT ON"),
    ):
        with pytest.raises(AssertionError, match=message):
            _clickhouse_users(broken)


# ---------------------------------------------------------------------------------------------
# docker-compose.yml


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def _compose_schema_errors(document: dict[str, Any]) -> list[str]:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_compose_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    errors = _compose_schema_errors(compose)
    assert not errors, "\n".join(errors)


def test_compose_schema_check_is_real(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["gateway"]["depends_on"]["nats"]["condition"] = "service_happy"
    broken["services"]["nats"]["restrat"] = "always"
    assert len(_compose_schema_errors(broken)) >= 2


def test_compose_dependencies_and_builds_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"nats", "config", "gateway"} <= services.keys()
    problems = []
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        if isinstance(depends_on, list):
            depends_on = {dep: {"condition": "service_started"} for dep in depends_on}
        for dep, spec in depends_on.items():
            if dep not in services:
                problems.append(f"{name}: depends on {dep}, which is not a service")
            elif spec.get("condition") == "service_healthy" and not _has_healthcheck(services[dep]):
                problems.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
        if "build" in service:
            build = service["build"]
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            if not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {dockerfile.relative_to(ROOT)} does not exist")
        elif "image" not in service:
            problems.append(f"{name}: neither build nor image")
        image = service.get("image", "")
        if (
            image
            and "build" not in service
            and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"))
        ):
            problems.append(f"{name}: image {image} is not pinned to a tag")
    assert not problems, "\n".join(problems)


def _has_healthcheck(service: dict[str, Any]) -> bool:
    healthcheck = service.get("healthcheck")
    if healthcheck is not None:
        return not healthcheck.get("disable", False) and healthcheck.get("test") not in (["NONE"], "NONE")
    build = service.get("build")
    if build is None:
        return False
    dockerfile = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
    return _final_stage(parse_dockerfile(dockerfile.read_text())).get("HEALTHCHECK") is not None


def test_compose_services_use_known_settings_and_require_secrets(compose: dict[str, Any]) -> None:
    services = compose["services"]
    problems = []
    for name in SERVICES:
        environment = services[name]["environment"]
        problems += _unknown_settings(name, list(environment), f"compose {name}")
        prefix = SERVICES[name][1]
        if environment.get(f"{prefix}NATS_URL") != "nats://nats:4222":
            problems.append(f"compose {name}: {prefix}NATS_URL is not nats://nats:4222")
    required = {
        "gateway": "SB_GATEWAY_OPERATOR_KEY",
        "config": "SB_CONFIG_SECRET_KEY",
        "cdr": "SB_CDR_CLICKHOUSE_PASSWORD",
    }
    for name, var in required.items():
        value = services[name]["environment"][var]
        if _required_variable(value) != var:
            problems.append(
                f"{name}: {var} must come from the environment as ${{{var}:?message}}, not {value!r}"
            )
    # Every secret of every service (ClickHouse's and Grafana's included) comes from the
    # environment, and compose refuses to start without it.
    for name, service in services.items():
        for var, value in _compose_environment(service).items():
            if SECRET_VARIABLE.search(var) and _required_variable(value) is None:
                problems.append(f"{name}: secret {var} must be ${{SOME_VARIABLE:?message}}, not {value!r}")
    assert "8000:8000" in [str(port) for port in services["gateway"].get("ports", [])]
    assert not problems, "\n".join(problems)


SECRET_VARIABLE = re.compile(r"(PASSWORD|SECRET|_KEY)$")


def _required_variable(value: Any) -> str | None:
    """VAR when ``value`` is exactly ``${VAR:?message}``: compose stops when VAR is unset or empty."""
    match = re.fullmatch(r"\$\{(\w+):\?[^}]+\}", str(value))
    return match.group(1) if match else None


def _compose_environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {str(key): str(value) for key, value in environment.items()}


def _compose_mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's volumes (bind sources resolved to absolute paths)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        if source.startswith((".", "/")):
            source = str((ROOT / source).resolve())
        mounts[target] = source
    return mounts


def test_compose_runs_clickhouse_with_a_volume_and_a_ping_healthcheck(compose: dict[str, Any]) -> None:
    clickhouse = compose["services"]["clickhouse"]
    assert clickhouse["image"].startswith("clickhouse/clickhouse-server:")
    test = clickhouse["healthcheck"]["test"]
    command = " ".join(test[1:]) if isinstance(test, list) else test
    assert command == "wget --spider -q http://127.0.0.1:8123/ping"
    assert not clickhouse.get("ports"), "ClickHouse must stay on the compose network (native port 9000)"
    data = _compose_mounts(clickhouse).get("/var/lib/clickhouse")
    assert data in compose.get("volumes", {}), "ClickHouse's data path is not on a named volume"
    # Every password the users file reads from the environment is given, from a required variable.
    environment = _compose_environment(clickhouse)
    for user, (variable, _) in _clickhouse_users(_compose_clickhouse_users(compose)).items():
        assert _required_variable(environment.get(variable)), f"{user}: {variable} is not a required variable"


def test_compose_cdr_uses_the_clickhouse_server(compose: dict[str, Any]) -> None:
    services = compose["services"]
    cdr = services["cdr"]
    environment = _compose_environment(cdr)
    assert environment["SB_CDR_BACKEND"] == "server", "the embedded chDB store would die with the container"
    assert environment["SB_CDR_CLICKHOUSE_HOST"] == "clickhouse"
    assert environment["SB_CDR_CLICKHOUSE_PORT"] == "9000", "the native protocol, not HTTP (8123)"
    for dependency in ("nats", "clickhouse"):
        assert cdr["depends_on"][dependency]["condition"] == "service_healthy"
    # The cdr service logs in as a user of the users file, with the password that user reads.
    users = _clickhouse_users(_compose_clickhouse_users(compose))
    user = environment["SB_CDR_CLICKHOUSE_USER"]
    assert user in users, f"compose cdr logs in as {user}, which the ClickHouse users file does not define"
    variable, database = users[user]
    clickhouse_env = _compose_environment(services["clickhouse"])
    assert _required_variable(environment["SB_CDR_CLICKHOUSE_PASSWORD"]) == _required_variable(
        clickhouse_env[variable]
    ), f"cdr's password and ClickHouse's {variable} come from different variables"
    assert database is None, "the cdr service needs a user that may write"
    assert users["grafana"][1] == environment["SB_CDR_CLICKHOUSE_DATABASE"]


def _compose_command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def _compose_writable_paths(service: dict[str, Any]) -> set[str]:
    """Where a read-only container may still write: its tmpfs mounts and writable volumes."""
    tmpfs = service.get("tmpfs", [])
    paths = {entry.split(":")[0] for entry in ([tmpfs] if isinstance(tmpfs, str) else tmpfs)}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            if len(parts) < 3 or "ro" not in parts[2].split(","):
                paths.add(parts[1] if len(parts) > 1 else parts[0])
        elif not volume.get("read_only"):
            paths.add(volume["target"])
    return paths


def test_compose_runs_minio_from_quay_with_a_volume_and_a_healthcheck(compose: dict[str, Any]) -> None:
    minio = compose["services"]["minio"]
    assert minio["image"].startswith(MINIO_IMAGE_PREFIX), f"not pinned from quay.io: {minio['image']}"
    positional, flags = _cli_flags(_compose_command(minio))
    assert positional[0] == "server", positional
    data = _compose_mounts(minio).get(positional[1])
    assert data in compose.get("volumes", {}), "MinIO's data path is not on a named volume"
    assert _port_of(flags["--console-address"]) == 9001
    assert _port_of(flags.get("--address", ":9000")) == 9000
    test = minio["healthcheck"]["test"]
    command = " ".join(test[1:]) if isinstance(test, list) else test
    assert command in MINIO_HEALTHCHECKS, f"{command!r}: the image has mc (and not always curl)"
    environment = _compose_environment(minio)
    for variable in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        assert _required_variable(environment.get(variable)), f"{variable} is not a required variable"
    for port in minio.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"MinIO's port {port} is published beyond loopback"
        assert not str(port).endswith(":9000"), "the S3 API must stay on the compose network"


def test_compose_media_uses_minio(compose: dict[str, Any]) -> None:
    services = compose["services"]
    media = services["media"]
    environment = _compose_environment(media)
    for dependency in ("nats", "minio"):
        assert media["depends_on"][dependency]["condition"] == "service_healthy"
    minio_environment = _compose_environment(services["minio"])
    _, flags = _cli_flags(_compose_command(services["minio"]))
    assert environment["SB_MEDIA_S3_ENDPOINT"] == f"minio:{_port_of(flags.get('--address', ':9000'))}"
    for key, minio_variable in (
        ("SB_MEDIA_S3_ACCESS_KEY", "MINIO_ROOT_USER"),
        ("SB_MEDIA_S3_SECRET_KEY", "MINIO_ROOT_PASSWORD"),
    ):
        variable = _required_variable(environment.get(key))
        assert variable, f"{key} is not a required variable"
        assert variable == _required_variable(minio_environment[minio_variable]), (
            f"media's {key} and MinIO's {minio_variable} come from different variables"
        )
    assert environment.get("SB_MEDIA_S3_REGION", "us-east-1") == minio_environment.get(
        "MINIO_SITE_REGION", "us-east-1"
    )
    assert environment.get("SB_MEDIA_S3_SECURE", "false").lower() == "false"
    # With a read-only root filesystem, the scratch folder (and TMPDIR) must be mounted writable.
    assert media.get("read_only") is True
    image_env = _dockerfile_env("media")
    writable = _compose_writable_paths(media)
    for variable in ("SB_MEDIA_WORK_DIR", "TMPDIR"):
        path = environment.get(variable, image_env[variable])
        assert path in writable, f"{variable} ({path}) is not writable in the read-only container"


_GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _expanded_variables(value: Any) -> set[str]:
    """The environment variables Grafana expands in a provisioning file's values ($VAR, ${VAR})."""
    if isinstance(value, dict):
        return set().union(*(_expanded_variables(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_expanded_variables(v) for v in value))
    return {a or b for a, b in _GRAFANA_VARIABLE.findall(str(value))}


def _expand(value: Any, environment: dict[str, str]) -> str:
    return _GRAFANA_VARIABLE.sub(lambda m: environment.get(m.group(1) or m.group(2), ""), str(value))


def test_compose_grafana_matches_the_provisioning_files(compose: dict[str, Any]) -> None:
    services = compose["services"]
    grafana = services["grafana"]
    environment = _compose_environment(grafana)
    mounts = _compose_mounts(grafana)
    problems = []
    # The datasource's plugin, installed before provisioning runs and pinned to a version.
    (datasource,) = yaml.safe_load(GRAFANA_DATASOURCE.read_text())["datasources"]
    plugins = dict(
        entry.partition("@")[::2]
        for entry in environment.get("GF_PLUGINS_PREINSTALL_SYNC", "").split(",")
        if entry
    )
    if not plugins.get(datasource["type"]):
        problems.append(f"GF_PLUGINS_PREINSTALL_SYNC does not install {datasource['type']}@<version>")
    # Every variable the datasource file expands is set; it points at the ClickHouse service.
    for name in sorted(_expanded_variables(datasource)):
        if name not in environment:
            problems.append(
                f"{GRAFANA_DATASOURCE.relative_to(ROOT)} expands ${name}, which grafana does not set"
            )
    settings = {key: _expand(value, environment) for key, value in datasource["jsonData"].items()}
    if settings.get("host") != "clickhouse" or settings.get("port") != "9000":
        problems.append(
            f"the datasource reaches {settings.get('host')}:{settings.get('port')}, not clickhouse:9000"
        )
    users = _clickhouse_users(_compose_clickhouse_users(compose))
    reader = users.get(settings.get("username", ""))
    if reader is None or reader[1] != settings.get("defaultDatabase"):
        problems.append(
            f"ClickHouse user {settings.get('username')} is not a reader of {settings.get('defaultDatabase')}"
        )
    else:
        password = _required_variable(_expand(datasource["secureJsonData"]["password"], environment))
        if password is None or password != _required_variable(
            _compose_environment(services["clickhouse"])[reader[0]]
        ):
            problems.append("grafana's ClickHouse password and ClickHouse's come from different variables")
    # Provisioning folders at /etc/grafana/provisioning/<folder> (or the whole folder at once).
    provisioning = GRAFANA_DIR / "provisioning"
    if mounts.get(GRAFANA_PROVISIONING_CONTAINER_DIR) != str(provisioning.resolve()):
        for folder in sorted(path for path in provisioning.iterdir() if path.is_dir()):
            target = f"{GRAFANA_PROVISIONING_CONTAINER_DIR}/{folder.name}"
            if mounts.get(target) != str(folder.resolve()):
                problems.append(f"{folder.relative_to(ROOT)} is not mounted at {target}")
    # Dashboards where the dashboard provider reads them.
    for provider_file in sorted((provisioning / "dashboards").glob("*.y*ml")):
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            path = provider["options"]["path"]
            source = mounts.get(path)
            if source is None or not list(Path(source).glob("*.json")):
                problems.append(
                    f"{provider_file.relative_to(ROOT)}: nothing with dashboards is mounted at {path}"
                )
    if grafana["depends_on"]["clickhouse"]["condition"] != "service_healthy":
        problems.append("grafana does not wait for ClickHouse")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# Dockerfiles


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    image: str
    alias: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def get(self, keyword: str) -> Instruction | None:
        found = [i for i in self.instructions if i.keyword == keyword]
        return found[-1] if found else None


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions grouped by stage; comments dropped and continuation lines joined."""
    stages: list[Stage] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        pending = ""
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], alias))
        elif not stages:
            if instruction.keyword != "ARG":
                raise ValueError(f"line {start}: {instruction.keyword} before FROM")
        else:
            stages[-1].instructions.append(instruction)
    return stages


def _final_stage(stages: list[Stage]) -> Stage:
    assert stages, "no FROM"
    return stages[-1]


def lint_dockerfile(text: str, context: Path = ROOT) -> list[str]:
    """Problems found in a Dockerfile built with ``context`` (the repository root by default)."""
    stages = parse_dockerfile(text)
    if not stages:
        return ["no FROM instruction"]
    problems = []
    aliases: set[str] = set()
    for stage in stages:
        image = stage.image
        if image.lower() not in aliases:
            if image.startswith("$"):
                problems.append(f"FROM {image}: the base image must be written out, not an ARG")
            elif "@sha256:" not in image:
                name_tag = image.rsplit("/", 1)[-1]
                if ":" not in name_tag:
                    problems.append(f"FROM {image}: not pinned to a tag")
                elif name_tag.endswith(":latest"):
                    problems.append(f"FROM {image}: :latest is not a pin")
        if stage.alias:
            aliases.add(stage.alias.lower())
        for instruction in stage.instructions:
            if instruction.keyword == "ADD" and re.search(r"(https?|ftp)://|git@", instruction.args):
                problems.append(
                    f"line {instruction.line}: ADD of a URL (download in a RUN step with a checksum)"
                )
            if instruction.keyword == "COPY" and "--from=" not in instruction.args:
                problems += _check_copy_sources(instruction, context)
    final = stages[-1]
    user = final.get("USER")
    if user is None:
        problems.append("the final stage sets no USER: it would run as root")
    elif user.args.split(":")[0] in ("root", "0"):
        problems.append(f"line {user.line}: USER {user.args} is root")
    elif not user.args.split(":")[0].isdigit():
        problems.append(
            f"line {user.line}: USER {user.args} should be numeric (runAsNonRoot cannot check a name)"
        )
    healthcheck = final.get("HEALTHCHECK")
    if healthcheck is None or healthcheck.args.upper() == "NONE":
        problems.append("the final stage has no HEALTHCHECK")
    if final.get("ENTRYPOINT") is None and final.get("CMD") is None:
        problems.append("the final stage has neither ENTRYPOINT nor CMD")
    return problems


def _check_copy_sources(instruction: Instruction, context: Path = ROOT) -> list[str]:
    words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
    ignored = _dockerignore_top_level(context / ".dockerignore")
    problems = []
    for source in words[:-1]:
        if any(char in source for char in "*?[$"):
            continue
        if not (context / source).exists():
            problems.append(
                f"line {instruction.line}: COPY source {source} does not exist in the build context"
            )
        elif Path(source).parts[0] in ignored:
            problems.append(f"line {instruction.line}: COPY source {source} is excluded by .dockerignore")
    return problems


def _dockerignore_top_level(dockerignore: Path = DOCKERIGNORE) -> set[str]:
    if not dockerignore.is_file():
        return set()
    lines = (line.strip() for line in dockerignore.read_text().splitlines())
    return {
        line.strip("/")
        for line in lines
        if line and not line.startswith(("#", "!", "**")) and "/" not in line.strip("/")
    }


SERVICE_DOCKERFILES = sorted(ROOT.glob("services/*/Dockerfile"))
# Every image with its build context: the services' is the repository root, the Asterisk image's
# its own folder (the root context's .dockerignore leaves deploy/ out).
DOCKERFILES = [(path, ROOT) for path in SERVICE_DOCKERFILES] + [(ASTERISK_DOCKERFILE, ASTERISK_DIR)]


def test_every_service_has_a_dockerfile() -> None:
    assert {path.parent.name for path in SERVICE_DOCKERFILES} >= set(SERVICES)
    assert ASTERISK_DOCKERFILE.is_file()


@pytest.mark.parametrize(("dockerfile", "context"), DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_lint(dockerfile: Path, context: Path) -> None:
    problems = lint_dockerfile(dockerfile.read_text(), context)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_dockerfile_runs_the_service_on_its_port(service: str) -> None:
    dockerfile = ROOT / "services" / service / "Dockerfile"
    final = _final_stage(parse_dockerfile(dockerfile.read_text()))
    pyproject = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
    entrypoint = final.get("ENTRYPOINT")
    assert entrypoint is not None
    assert json.loads(entrypoint.args)[0] in pyproject["project"]["scripts"]
    prefix, fields = _settings_fields(service)
    port = fields["http_port"].default
    env = " ".join(i.args for i in final.instructions if i.keyword == "ENV")
    assert f"{prefix}HTTP_HOST=0.0.0.0" in env
    expose = final.get("EXPOSE")
    assert expose is not None
    assert expose.args.split("/")[0] == str(port)
    healthcheck = final.get("HEALTHCHECK")
    assert healthcheck is not None
    assert "/healthz" in healthcheck.args
    assert str(port) in healthcheck.args


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_dockerfile_installs_the_service_lock_with_hashes(service: str) -> None:
    stages = parse_dockerfile((ROOT / "services" / service / "Dockerfile").read_text())
    instructions = [i for stage in stages for i in stage.instructions]
    lock = f"services/{service}/requirements.lock"
    assert (ROOT / lock).is_file()
    assert any(i.keyword == "COPY" and shlex.split(i.args)[0] == lock for i in instructions), (
        f"{lock} is not copied"
    )
    assert any(
        i.keyword == "RUN"
        and "pip install" in i.args
        and "--require-hashes" in i.args
        and "-r" in i.args.split()
        for i in instructions
    ), "third-party packages are not installed from the lock with --require-hashes"
    # The image's own SB_* defaults are settings of the service.
    final = _final_stage(stages)
    variables = [
        word.split("=", 1)[0]
        for i in final.instructions
        if i.keyword == "ENV"
        for word in shlex.split(i.args)
    ]
    assert not _unknown_settings(service, variables, f"services/{service}/Dockerfile")


def _dockerfile_env(service: str) -> dict[str, str]:
    """The ENV defaults of a service image's final stage."""
    final = _final_stage(parse_dockerfile((ROOT / "services" / service / "Dockerfile").read_text()))
    return dict(
        word.split("=", 1) for i in final.instructions if i.keyword == "ENV" for word in shlex.split(i.args)
    )


def test_media_image_has_ffmpeg_and_a_scratch_folder() -> None:
    final = _final_stage(parse_dockerfile((ROOT / "services" / "media" / "Dockerfile").read_text()))
    runs = [i.args for i in final.instructions if i.keyword == "RUN"]
    assert any(
        "apt-get update" in run
        and re.search(r"apt-get install -y --no-install-recommends (\S+ )*ffmpeg\b", run)
        and "rm -rf /var/lib/apt/lists/*" in run
        for run in runs
    ), "Debian's ffmpeg is not installed (without recommends, lists cleaned) in the runtime stage"
    env = _dockerfile_env("media")
    work_dir = env.get("SB_MEDIA_WORK_DIR")
    assert work_dir, "no SB_MEDIA_WORK_DIR: the scratch files would go to /tmp"
    assert env.get("TMPDIR") == work_dir, "pydub's temporary files would go to /tmp"
    assert any(f"mkdir -p {work_dir}" in run and f"chown 10001:10001 {work_dir}" in run for run in runs), (
        f"{work_dir} is not created for the service's user"
    )


@pytest.mark.parametrize(
    ("dockerfile", "expected"),
    [
        ('FROM python\nCMD ["x"]\n', ["not pinned to a tag", "no USER", "no HEALTHCHECK"]),
        (
            'FROM python:latest\nUSER root\nHEALTHCHECK NONE\nCMD ["x"]\n',
            [":latest", "is root", "no HEALTHCHECK"],
        ),
        (
            "FROM python:3.11-slim AS build\nFROM build\nADD https://example.com/x.tgz /x\nUSER app\n"
            'HEALTHCHECK CMD true\nCMD ["x"]\n',
            ["ADD of a URL", "should be numeric"],
        ),
        (
            "FROM python:3.11-slim\nCOPY no-such-dir /x\nUSER 1000\nHEALTHCHECK CMD true\n",
            ["does not exist", "neither"],
        ),
        (
            # The root context's .dockerignore leaves deploy/ out.
            'FROM debian:sid-slim\nCOPY deploy/asterisk/etc /x\nUSER 1000\nHEALTHCHECK CMD true\nCMD ["x"]\n',
            ["excluded by .dockerignore"],
        ),
    ],
)
def test_dockerfile_lint_catches_problems(dockerfile: str, expected: list[str]) -> None:
    problems = "\n".join(lint_dockerfile(dockerfile))
    for fragment in expected:
        assert fragment in problems


def test_dockerfile_lint_reads_copy_sources_from_the_build_context() -> None:
    dockerfile = 'FROM debian:sid-slim\nCOPY etc /x\nUSER 1000\nHEALTHCHECK CMD true\nCMD ["x"]\n'
    assert not lint_dockerfile(dockerfile, ASTERISK_DIR)
    assert "does not exist" in "\n".join(lint_dockerfile(dockerfile, ROOT))


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_context() -> None:
    ignored = _dockerignore_top_level()
    assert {".git", ".venv", ".tools", "data", ".env"} <= ignored


# ---------------------------------------------------------------------------------------------
# Telephony: the Asterisk image (deploy/asterisk), its entrypoint, and how docker-compose.yml and
# deploy/k8s wire Asterisk to the call-flow service.

# What the image installs from Debian (openssl makes the self-signed TLS certificate).
ASTERISK_PACKAGES = {
    "asterisk",
    "asterisk-modules",
    "asterisk-core-sounds-en-wav",
    "asterisk-core-sounds-ru-wav",
    "asterisk-moh-opsound-wav",
    "openssl",
}
CONTAINER_TMP = "/tmp"  # noqa: S108 (a path inside the containers)
ASTERISK_PASSWORDS = {
    # Characters that sed's s||| would otherwise take for its own.
    "SB_ASTERISK_ARI_PASSWORD": r"ari&pass|word\/x",
    "SB_ASTERISK_AMI_PASSWORD": "ami-Pass_word",
}


def _asterisk_image() -> Stage:
    stages = parse_dockerfile(ASTERISK_DOCKERFILE.read_text())
    assert len(stages) == 1, "the Asterisk image has one stage"
    return stages[0]


def _asterisk_image_env() -> dict[str, str]:
    return dict(
        word.split("=", 1)
        for i in _asterisk_image().instructions
        if i.keyword == "ENV"
        for word in shlex.split(i.args)
    )


def _entrypoint_variables() -> set[str]:
    """The SB_ASTERISK_* variables the image's entrypoint reads."""
    return set(re.findall(r"\bSB_ASTERISK_[A-Z_]+\b", ASTERISK_ENTRYPOINT.read_text()))


def _asterisk_setting(environment: dict[str, str], variable: str) -> str:
    """SB_ASTERISK_<...> as the entrypoint sees it: the value given, else its ${VAR:-default}."""
    if environment.get(variable):
        return environment[variable]
    defaults = set(re.findall(rf"\$\{{{variable}:-([^}}]*)\}}", ASTERISK_ENTRYPOINT.read_text()))
    assert len(defaults) == 1, f"the entrypoint has no single default for {variable}: {defaults}"
    return defaults.pop()


def _callflow_setting(environment: dict[str, str], name: str) -> str:
    """SB_CALLFLOW_<NAME> as the service sees it: the value given, else the Settings default."""
    variable = f"SB_CALLFLOW_{name.upper()}"
    if variable in environment:
        return environment[variable]
    _, fields = _settings_fields("callflow")
    default = fields[name].default
    return str(default.get_secret_value() if hasattr(default, "get_secret_value") else default)


def _used_placeholders() -> set[str]:
    return {
        name
        for template in ASTERISK_TEMPLATES.glob("*.conf")
        for name in local_asterisk.PLACEHOLDER.findall(template.read_text())
    }


def _conf(text: str) -> dict[str, dict[str, list[str]]]:
    """An Asterisk configuration file: section -> key -> values (in order)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if line.startswith("[") and "]" in line:
            current = sections.setdefault(line[1 : line.index("]")], {})
        elif "=" in line:
            key, _, value = line.partition("=")
            current.setdefault(key.strip().rstrip(">").strip(), []).append(value.lstrip(">").strip())
    return sections


def _run_entrypoint(
    tmp_path: Path, environment: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """The entrypoint under plain sh, with the repository's templates, a home in ``tmp_path``
    and a stand-in ``asterisk`` that writes its arguments to ``tmp_path/asterisk.args``."""
    sh = shutil.which("sh")
    assert sh, "no sh"
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir(exist_ok=True)
    stub = stub_dir / "asterisk"
    stub.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{tmp_path / 'asterisk.args'}'\n")
    stub.chmod(0o755)
    env = {
        "PATH": f"{stub_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "SB_ASTERISK_TEMPLATES": str(ASTERISK_TEMPLATES),
        "SB_ASTERISK_HOME": str(tmp_path / "home"),
        **environment,
    }
    return subprocess.run(
        [sh, str(ASTERISK_ENTRYPOINT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_asterisk_image_installs_debian_asterisk_and_runs_the_entrypoint() -> None:
    image = _asterisk_image()
    assert image.image == "debian:sid-slim", "Asterisk 22 is in Debian sid (as in scripts/asterisk.py)"
    instructions = image.instructions
    installs = [i for i in instructions if i.keyword == "RUN" and "apt-get install" in i.args]
    assert len(installs) == 1
    install = installs[0]
    words = set(install.args.split())
    assert "apt-get update" in install.args and "rm -rf /var/lib/apt/lists/*" in install.args
    assert "--no-install-recommends" in words
    assert words >= ASTERISK_PACKAGES, f"not installed: {sorted(ASTERISK_PACKAGES - words)}"
    # The Asterisk of the local runs and the tests (scripts/asterisk.py) comes from the same packages.
    local = {package for package in local_asterisk.PACKAGES if package.startswith("asterisk")}
    assert local <= words, f"scripts/asterisk.py installs {sorted(local - words)}, the image does not"
    # The package creates its user only when missing: it is made first, with the numeric USER.
    user = image.get("USER")
    assert user is not None
    uid, _, gid = user.args.partition(":")
    useradds = [i for i in instructions if i.keyword == "RUN" and "useradd" in i.args]
    assert useradds, "no user is created before the package"
    assert re.search(rf"useradd .*--uid {uid} .*\basterisk$", useradds[0].args)
    assert f"--gid {gid or uid}" in useradds[0].args
    assert instructions.index(useradds[0]) < instructions.index(install)
    # Templates where the entrypoint reads them; the entrypoint is the image's.
    env = _asterisk_image_env()
    copies = {}
    for instruction in (i for i in instructions if i.keyword == "COPY"):
        words_ = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
        copies[words_[0]] = (words_[-1], instruction.args)
    assert copies["etc"][0] == env["SB_ASTERISK_TEMPLATES"]
    entrypoint = image.get("ENTRYPOINT")
    assert entrypoint is not None
    target, args = copies["entrypoint.sh"]
    assert json.loads(entrypoint.args) == [target]
    assert "--chmod=0755" in args or os.access(ASTERISK_ENTRYPOINT, os.X_OK)
    # Its home (rendered configuration, state, keys) exists and belongs to the user.
    home = env["SB_ASTERISK_HOME"]
    runs = [i.args for i in instructions if i.keyword == "RUN"]
    owned = [m.group(1) for run in runs for m in re.finditer(rf"chown -R {uid}:{gid or uid} (\S+)", run)]
    assert any(home == path or home.startswith(path.rstrip("/") + "/") for path in owned), (
        f"{home} is not given to {uid}"
    )
    assert any("mkdir -p" in run and home in run for run in runs)
    # Health: Asterisk's control socket, found through the rendered asterisk.conf.
    healthcheck = image.get("HEALTHCHECK")
    assert healthcheck is not None
    assert re.search(r'asterisk -C "\$SB_ASTERISK_HOME/etc/asterisk.conf" -rx ', healthcheck.args)
    expose = image.get("EXPOSE")
    assert expose is not None
    assert {"5060/udp", "5060/tcp", "5061/tcp"} <= set(expose.args.split())


def test_entrypoint_renders_every_placeholder(tmp_path: Path) -> None:
    out = tmp_path / "etc"
    result = _run_entrypoint(
        tmp_path,
        {
            **ASTERISK_PASSWORDS,
            "SB_ASTERISK_EXTERNAL_ADDRESS": "203.0.113.5",
            "SB_ASTERISK_LOCAL_NET": "10.0.0.0/8, 192.168.0.0/16",
        },
        "render",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    templates = sorted(ASTERISK_TEMPLATES.glob("*.conf"))
    assert templates and _used_placeholders()
    assert sorted(path.name for path in out.iterdir()) == [template.name for template in templates]
    for template in templates:
        text = template.read_text()
        rendered = (out / template.name).read_text()
        assert not local_asterisk.PLACEHOLDER.search(rendered), f"{template.name}: a placeholder is left"
        # "%%{" stays only where the template has it outside a placeholder (a comment).
        assert rendered.count("%%{") == local_asterisk.PLACEHOLDER.sub("", text).count("%%{"), template.name
    conf = {path.name: _conf(path.read_text()) for path in out.iterdir()}
    assert conf["ari.conf"]["switchboard"]["password"] == [ASTERISK_PASSWORDS["SB_ASTERISK_ARI_PASSWORD"]]
    assert conf["manager.conf"]["switchboard"]["secret"] == [ASTERISK_PASSWORDS["SB_ASTERISK_AMI_PASSWORD"]]
    assert conf["asterisk.conf"]["directories"]["astetcdir"] == [f"{tmp_path / 'home'}/etc"]
    assert conf["http.conf"]["general"] == {
        "enabled": ["yes"],
        "bindaddr": ["127.0.0.1"],
        "bindport": ["8088"],
    }
    assert conf["manager.conf"]["switchboard"]["permit"] == ["127.0.0.1/255.255.255.255"]
    for transport in ("transport-udp", "transport-tcp", "transport-tls"):
        section = conf["pjsip.conf"][transport]
        assert section["external_media_address"] == ["203.0.113.5"]
        assert section["external_signaling_address"] == ["203.0.113.5"]
        assert section["local_net"] == ["10.0.0.0/8", "192.168.0.0/16"]
    assert conf["pjsip.conf"]["transport-udp"]["bind"] == ["0.0.0.0:5060"]
    assert conf["pjsip.conf"]["transport-tls"]["bind"] == ["0.0.0.0:5061"]


def test_entrypoint_renders_as_scripts_asterisk_does(tmp_path: Path) -> None:
    """The image and the local runs fill the same placeholders with the same meaning: the
    entrypoint's output equals scripts/asterisk.py's render for the same instance."""
    home = tmp_path / "home"
    instance = local_asterisk.Instance(
        "image",
        sip_port=15060,
        tls_port=15061,
        ari_port=18088,
        ami_port=15038,
        rtp_start=30000,
        rtp_end=30199,
        bind_address="0.0.0.0",
        sip_bind="192.0.2.10",
        ari_password=ASTERISK_PASSWORDS["SB_ASTERISK_ARI_PASSWORD"],
        ami_password=ASTERISK_PASSWORDS["SB_ASTERISK_AMI_PASSWORD"],
        language="en",
        external_address="198.51.100.7",
        local_net="172.16.0.0/12",
    )
    values = {
        **instance.values(),
        # Paths are the image's, not the root's.
        "etc_dir": f"{home}/etc",
        "state_dir": f"{home}/state",
        "tls_cert": "/etc/switchboard/sip-tls/tls.crt",
        "tls_key": "/etc/switchboard/sip-tls/tls.key",
    }
    assert _used_placeholders() <= values.keys()
    result = _run_entrypoint(
        tmp_path,
        {
            **ASTERISK_PASSWORDS,
            "SB_ASTERISK_SIP_PORT": str(instance.sip_port),
            "SB_ASTERISK_TLS_PORT": str(instance.tls_port),
            "SB_ASTERISK_ARI_PORT": str(instance.ari_port),
            "SB_ASTERISK_AMI_PORT": str(instance.ami_port),
            "SB_ASTERISK_RTP_START": str(instance.rtp_start),
            "SB_ASTERISK_RTP_END": str(instance.rtp_end),
            "SB_ASTERISK_BIND_ADDRESS": instance.bind_address,
            "SB_ASTERISK_SIP_BIND": instance.sip_bind,
            "SB_ASTERISK_LANGUAGE": instance.language,
            "SB_ASTERISK_EXTERNAL_ADDRESS": str(instance.external_address),
            "SB_ASTERISK_LOCAL_NET": instance.local_net,
            "SB_ASTERISK_TLS_CERT": values["tls_cert"],
            "SB_ASTERISK_TLS_KEY": values["tls_key"],
        },
        "render",
        str(tmp_path / "etc"),
    )
    assert result.returncode == 0, result.stderr

    def lines(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip()]

    for template in sorted(ASTERISK_TEMPLATES.glob("*.conf")):
        expected = local_asterisk.render(template.read_text(), values)
        assert lines((tmp_path / "etc" / template.name).read_text()) == lines(expected), template.name


def test_entrypoint_without_external_address_writes_no_nat_options(tmp_path: Path) -> None:
    result = _run_entrypoint(tmp_path, ASTERISK_PASSWORDS, "render", str(tmp_path / "etc"))
    assert result.returncode == 0, result.stderr
    pjsip = (tmp_path / "etc" / "pjsip.conf").read_text()
    assert "external_" not in pjsip
    assert "local_net" not in pjsip


def test_entrypoint_refuses_a_missing_password_or_value(tmp_path: Path) -> None:
    result = _run_entrypoint(
        tmp_path,
        {"SB_ASTERISK_AMI_PASSWORD": ASTERISK_PASSWORDS["SB_ASTERISK_AMI_PASSWORD"]},
        "render",
        str(tmp_path / "a"),
    )
    assert result.returncode != 0
    assert "SB_ASTERISK_ARI_PASSWORD" in result.stderr
    # A placeholder the entrypoint does not know stops it (it would reach Asterisk as text).
    templates = tmp_path / "templates"
    shutil.copytree(ASTERISK_TEMPLATES, templates)
    with (templates / "rtp.conf").open("a") as file:
        file.write("strictrtp = %%{no_such_value}\n")
    result = _run_entrypoint(
        tmp_path,
        {**ASTERISK_PASSWORDS, "SB_ASTERISK_TEMPLATES": str(templates)},
        "render",
        str(tmp_path / "b"),
    )
    assert result.returncode != 0
    assert "no_such_value" in result.stderr


def test_entrypoint_makes_a_certificate_and_runs_asterisk_in_front(tmp_path: Path) -> None:
    from cryptography import x509

    home = tmp_path / "home"
    environment = {**ASTERISK_PASSWORDS, "SB_ASTERISK_EXTERNAL_ADDRESS": "203.0.113.5"}
    result = _run_entrypoint(tmp_path, environment)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "asterisk.args").read_text().split("\n")[:4] == [
        "-f",
        "-n",
        "-C",
        f"{home}/etc/asterisk.conf",
    ]
    for sub in ("state/spool", "state/run", "state/log", "state/keys"):
        assert (home / sub).is_dir(), sub
    cert, key = home / "keys" / "sip.crt", home / "keys" / "sip.key"
    assert key.stat().st_mode & 0o077 == 0, "the private key is readable by others"
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["203.0.113.5"]
    pjsip = _conf((home / "etc" / "pjsip.conf").read_text())["transport-tls"]
    assert pjsip["cert_file"] == [str(cert)]
    assert pjsip["priv_key_file"] == [str(key)]
    # A certificate named but not there (an optional Secret that is absent): the one made
    # before, kept across restarts.
    made = cert.read_bytes()
    missing = {"SB_ASTERISK_TLS_CERT": "/nonexistent/tls.crt", "SB_ASTERISK_TLS_KEY": "/nonexistent/tls.key"}
    result = _run_entrypoint(tmp_path, {**environment, **missing})
    assert result.returncode == 0, result.stderr
    assert cert.read_bytes() == made
    assert _conf((home / "etc" / "pjsip.conf").read_text())["transport-tls"]["cert_file"] == [str(cert)]
    # A mounted certificate is used as it is.
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    shutil.copy(cert, mounted / "tls.crt")
    shutil.copy(key, mounted / "tls.key")
    given = {
        "SB_ASTERISK_TLS_CERT": str(mounted / "tls.crt"),
        "SB_ASTERISK_TLS_KEY": str(mounted / "tls.key"),
    }
    result = _run_entrypoint(tmp_path, {**environment, **given})
    assert result.returncode == 0, result.stderr
    pjsip = _conf((home / "etc" / "pjsip.conf").read_text())["transport-tls"]
    assert pjsip["cert_file"] == [given["SB_ASTERISK_TLS_CERT"]]
    assert pjsip["priv_key_file"] == [given["SB_ASTERISK_TLS_KEY"]]


def _published(service: dict[str, Any]) -> set[str]:
    """The container side of a compose service's published ports, as ``PORT[-END]/protocol``."""
    published = set()
    for port in service.get("ports", []):
        assert isinstance(port, str), f"use the short syntax for {port}"
        target = port.rsplit(":", 1)[-1]
        published.add(target if "/" in target else f"{target}/tcp")
    return published


def test_compose_wires_callflow_to_asterisk(compose: dict[str, Any]) -> None:
    services = compose["services"]
    asterisk, callflow = services["asterisk"], services["callflow"]
    asterisk_env, callflow_env = _compose_environment(asterisk), _compose_environment(callflow)
    assert (ROOT / asterisk["build"]["context"]).resolve() == ASTERISK_DIR
    # Every variable set is one the entrypoint or the call-flow service reads.
    unknown = {v for v in asterisk_env if v.startswith("SB_ASTERISK_")} - _entrypoint_variables()
    assert not unknown, f"compose asterisk sets {sorted(unknown)}, which the entrypoint does not read"
    assert not _unknown_settings("callflow", list(callflow_env), "compose callflow")
    # ARI and AMI: the asterisk service, on its ports, reachable from another container.
    assert _asterisk_setting(asterisk_env, "SB_ASTERISK_BIND_ADDRESS") == "0.0.0.0", (
        "ARI and AMI on loopback are out of the call-flow container's reach"
    )
    ari = urlsplit(_callflow_setting(callflow_env, "ari_url"))
    assert (ari.hostname, ari.port) == (
        "asterisk",
        int(_asterisk_setting(asterisk_env, "SB_ASTERISK_ARI_PORT")),
    )
    assert _callflow_setting(callflow_env, "ami_host") == "asterisk"
    assert int(_callflow_setting(callflow_env, "ami_port")) == int(
        _asterisk_setting(asterisk_env, "SB_ASTERISK_AMI_PORT")
    )
    for kind in ("ari", "ami"):
        upper = kind.upper()
        assert _callflow_setting(callflow_env, f"{kind}_user") == _asterisk_setting(
            asterisk_env, f"SB_ASTERISK_{upper}_USER"
        )
        variable = _required_variable(asterisk_env[f"SB_ASTERISK_{upper}_PASSWORD"])
        assert variable, f"Asterisk's {upper} password is not a required variable"
        assert _required_variable(callflow_env[f"SB_CALLFLOW_{upper}_PASSWORD"]) == variable, (
            f"the call-flow service's {upper} password and Asterisk's come from different variables"
        )
    assert _callflow_setting(callflow_env, "ari_app") == _asterisk_setting(
        asterisk_env, "SB_ASTERISK_ARI_APP"
    )
    assert _callflow_setting(callflow_env, "nats_url") == "nats://nats:4222"
    for dependency in ("nats", "asterisk"):
        assert callflow["depends_on"][dependency]["condition"] == "service_healthy"
    # Sound files: one named volume, at the path each side uses.
    sounds = callflow_env.get("SB_CALLFLOW_SOUNDS_DIR", _dockerfile_env("callflow")["SB_CALLFLOW_SOUNDS_DIR"])
    asterisk_sounds = callflow_env.get("SB_CALLFLOW_ASTERISK_SOUNDS_DIR") or sounds
    volume = _compose_mounts(callflow).get(sounds)
    assert volume in compose.get("volumes", {}), f"{sounds} is not on a named volume"
    assert _compose_mounts(asterisk).get(asterisk_sounds) == volume, (
        f"Asterisk does not see the call-flow service's sound files at {asterisk_sounds}"
    )
    assert callflow.get("read_only") is True
    assert sounds in _compose_writable_paths(callflow)
    # Asterisk: read-only root filesystem, its home and /tmp writable.
    assert asterisk.get("read_only") is True
    writable = _compose_writable_paths(asterisk)
    assert {_asterisk_image_env()["SB_ASTERISK_HOME"], CONTAINER_TMP} <= writable
    # SIP (UDP, TCP), TLS and the RTP range published; ARI and AMI not.
    published = _published(asterisk)
    sip = _asterisk_setting(asterisk_env, "SB_ASTERISK_SIP_PORT")
    tls = _asterisk_setting(asterisk_env, "SB_ASTERISK_TLS_PORT")
    rtp = "{}-{}/udp".format(
        _asterisk_setting(asterisk_env, "SB_ASTERISK_RTP_START"),
        _asterisk_setting(asterisk_env, "SB_ASTERISK_RTP_END"),
    )
    assert {f"{sip}/udp", f"{sip}/tcp", f"{tls}/tcp", rtp} <= published, published
    for variable in ("SB_ASTERISK_ARI_PORT", "SB_ASTERISK_AMI_PORT"):
        assert f"{_asterisk_setting(asterisk_env, variable)}/tcp" not in published
    # Behind Docker's NAT, Asterisk must know the address phones reach.
    assert _required_variable(asterisk_env["SB_ASTERISK_EXTERNAL_ADDRESS"])


def _telephony_pod(manifests: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    deployment = _find(manifests, "Deployment", "callflow")
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"asterisk", "callflow"}
    return deployment, containers["asterisk"], containers["callflow"]


def _declared_port(container: dict[str, Any], port: str | int, protocol: str) -> int:
    for declared in container.get("ports", []):
        if (
            port in (declared.get("name"), declared["containerPort"])
            and declared.get("protocol", "TCP") == protocol
        ):
            return int(declared["containerPort"])
    raise AssertionError(f"container {container['name']} has no {protocol} port {port}")


def test_k8s_runs_asterisk_and_callflow_in_one_pod(manifests: list[dict[str, Any]]) -> None:
    deployment, asterisk, callflow = _telephony_pod(manifests)
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    assert spec["replicas"] == 1, "one Asterisk with its call-flow service"
    assert spec["strategy"]["type"] == "Recreate"
    assert not pod.get("hostNetwork", False)
    assert asterisk["image"].startswith("switchboard/asterisk:")
    assert callflow["image"].startswith("switchboard/callflow:")
    asterisk_env, callflow_env = _env_values(manifests, asterisk), _env_values(manifests, callflow)
    unknown = {v for v in asterisk_env if v.startswith("SB_ASTERISK_")} - _entrypoint_variables()
    assert not unknown, f"the asterisk container sets {sorted(unknown)}, which the entrypoint does not read"
    assert not _unknown_settings("callflow", list(callflow_env), "k8s callflow")
    # ARI and AMI on the Pod's loopback, reached there by the call-flow container.
    assert _asterisk_setting(asterisk_env, "SB_ASTERISK_BIND_ADDRESS") == "127.0.0.1"
    ari = urlsplit(_callflow_setting(callflow_env, "ari_url"))
    assert (ari.hostname, ari.port) == (
        "127.0.0.1",
        int(_asterisk_setting(asterisk_env, "SB_ASTERISK_ARI_PORT")),
    )
    assert _callflow_setting(callflow_env, "ami_host") == "127.0.0.1"
    assert int(_callflow_setting(callflow_env, "ami_port")) == int(
        _asterisk_setting(asterisk_env, "SB_ASTERISK_AMI_PORT")
    )
    for kind in ("ari", "ami"):
        upper = kind.upper()
        assert _callflow_setting(callflow_env, f"{kind}_user") == _asterisk_setting(
            asterisk_env, f"SB_ASTERISK_{upper}_USER"
        )
        password = asterisk_env[f"SB_ASTERISK_{upper}_PASSWORD"]
        assert password.startswith("secret:"), f"Asterisk's {upper} password is not from a Secret"
        assert callflow_env[f"SB_CALLFLOW_{upper}_PASSWORD"] == password
    assert _callflow_setting(callflow_env, "ari_app") == _asterisk_setting(
        asterisk_env, "SB_ASTERISK_ARI_APP"
    )
    assert callflow_env["SB_CALLFLOW_NATS_URL"] == "nats://nats:4222"
    # The call-flow service's probes; the Pod is ready when its /readyz is.
    assert callflow_env["SB_CALLFLOW_HTTP_HOST"] == "0.0.0.0"
    http = _container_port(callflow, "http")
    assert int(callflow_env["SB_CALLFLOW_HTTP_PORT"]) == http
    readiness = callflow["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert _container_port(callflow, readiness["port"]) == http
    # Sound files: one emptyDir, at the path each side uses.
    sounds = callflow_env.get("SB_CALLFLOW_SOUNDS_DIR", _dockerfile_env("callflow")["SB_CALLFLOW_SOUNDS_DIR"])
    asterisk_sounds = callflow_env.get("SB_CALLFLOW_ASTERISK_SOUNDS_DIR") or sounds
    volume = _mounted_volume(deployment, callflow, sounds)
    assert volume is not None and "emptyDir" in volume, f"{sounds} is not on an emptyDir"
    assert _mounted_volume(deployment, asterisk, asterisk_sounds) == volume, (
        f"Asterisk does not see the call-flow service's sound files at {asterisk_sounds}"
    )
    # Asterisk's home and /tmp writable (read-only root filesystem); its probes ask its control
    # socket through the asterisk.conf rendered there.
    home = _asterisk_image_env()["SB_ASTERISK_HOME"]
    for path in (home, CONTAINER_TMP):
        assert "emptyDir" in (_mounted_volume(deployment, asterisk, path) or {}), f"{path} is not writable"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = asterisk[probe]["exec"]["command"]
        assert command[0] == "asterisk" and "-rx" in command, probe
        assert command[command.index("-C") + 1] == f"{home}/etc/asterisk.conf", probe
    # SIP over TLS: a certificate from an optional Secret (the entrypoint makes one without it).
    for variable in ("SB_ASTERISK_TLS_CERT", "SB_ASTERISK_TLS_KEY"):
        secret = (_mounted_volume(deployment, asterisk, asterisk_env[variable]) or {}).get("secret")
        assert secret and secret.get("optional") is True, f"{variable} is not in an optional Secret"


def test_k8s_sip_service_reaches_asterisk(manifests: list[dict[str, Any]]) -> None:
    deployment, asterisk, _ = _telephony_pod(manifests)
    service = _find(manifests, "Service", "sip")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    env = _env_values(manifests, asterisk)
    sip = int(_asterisk_setting(env, "SB_ASTERISK_SIP_PORT"))
    tls = int(_asterisk_setting(env, "SB_ASTERISK_TLS_PORT"))
    reached = {
        (port.get("protocol", "TCP"), port["port"]): _declared_port(
            asterisk, port.get("targetPort", port["port"]), port.get("protocol", "TCP")
        )
        for port in service["spec"]["ports"]
    }
    assert reached == {("UDP", 5060): sip, ("TCP", 5060): sip, ("TCP", 5061): tls}
