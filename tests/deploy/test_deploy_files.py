"""Static checks of the operator-facing deployment files: the services' Dockerfiles,
docker-compose.yml and the kustomize base in deploy/k8s.

Nothing is built, started or fetched: the Kubernetes manifests are rendered with
``kubectl kustomize`` (or, where kubectl is not installed, read from the files the kustomization
lists) and validated against the schemas that ``kubernetes-validate`` ships; docker-compose.yml is
validated against the compose-spec schema that ``check-jsonschema`` ships; the Dockerfiles are
linted by the small rules below."""

from __future__ import annotations

import importlib
import importlib.resources
import json
import re
import shlex
import shutil
import subprocess
import tomllib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S_VERSION = "1.30"
NAMESPACE = "switchboard"

# The Python services that have images: service dir name -> (settings module, env prefix).
SERVICES = {
    "config": ("switchboard_config.settings", "SB_CONFIG_"),
    "gateway": ("switchboard_gateway.settings", "SB_GATEWAY_"),
}
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
    assert {w["metadata"]["name"] for w in workloads} >= {"nats", "config", "gateway"}
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
    problems = []
    for name in SERVICES:
        workload = _find(manifests, "Deployment", name)
        for where, container in _containers(workload):
            env = container.get("env", [])
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
    required = {"gateway": "SB_GATEWAY_OPERATOR_KEY", "config": "SB_CONFIG_SECRET_KEY"}
    for name, var in required.items():
        value = services[name]["environment"][var]
        if not re.fullmatch(rf"\$\{{{var}:\?[^}}]+\}}", value):
            problems.append(
                f"{name}: {var} must come from the environment as ${{{var}:?message}}, not {value!r}"
            )
    assert "8000:8000" in [str(port) for port in services["gateway"].get("ports", [])]
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


def lint_dockerfile(text: str) -> list[str]:
    """Problems found in a Dockerfile whose build context is the repository root."""
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
                problems += _check_copy_sources(instruction)
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


def _check_copy_sources(instruction: Instruction) -> list[str]:
    words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
    ignored = _dockerignore_top_level()
    problems = []
    for source in words[:-1]:
        if any(char in source for char in "*?[$"):
            continue
        if not (ROOT / source).exists():
            problems.append(
                f"line {instruction.line}: COPY source {source} does not exist in the build context"
            )
        elif Path(source).parts[0] in ignored:
            problems.append(f"line {instruction.line}: COPY source {source} is excluded by .dockerignore")
    return problems


def _dockerignore_top_level() -> set[str]:
    if not DOCKERIGNORE.is_file():
        return set()
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return {
        line.strip("/")
        for line in lines
        if line and not line.startswith(("#", "!", "**")) and "/" not in line.strip("/")
    }


SERVICE_DOCKERFILES = sorted(ROOT.glob("services/*/Dockerfile"))


def test_every_service_has_a_dockerfile() -> None:
    assert {path.parent.name for path in SERVICE_DOCKERFILES} >= set(SERVICES)


@pytest.mark.parametrize("dockerfile", SERVICE_DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_lint(dockerfile: Path) -> None:
    problems = lint_dockerfile(dockerfile.read_text())
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
    ],
)
def test_dockerfile_lint_catches_problems(dockerfile: str, expected: list[str]) -> None:
    problems = "\n".join(lint_dockerfile(dockerfile))
    for fragment in expected:
        assert fragment in problems


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_context() -> None:
    ignored = _dockerignore_top_level()
    assert {".git", ".venv", ".tools", "data", ".env"} <= ignored
