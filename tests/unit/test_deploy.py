"""The deployment artifacts: Kubernetes manifests (validated offline against the Kubernetes
schemas, hardening present, wired to the settings the bot really reads) and the Prometheus alert
rules (structure, and only metrics the bot exports). No cluster, no kustomize binary, no Docker.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bot.config import Settings
from bot.policy import parse_policy

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
SECRET_EXAMPLE = KUSTOMIZE_DIR / "secret.example.yaml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
#: The oldest Kubernetes minor still commonly run; the manifests use nothing newer.
K8S_VERSION = "1.30.0"

Obj = dict[str, Any]


# --- kustomize, rendered without kustomize ----------------------------------------------------


def render(directory: Path = KUSTOMIZE_DIR) -> list[Obj]:
    """What `kubectl apply -k directory` would apply: the objects of every file in `resources`.

    Only a plain resource list is supported; a transformer (namePrefix, patches...) would change
    what is applied without this renderer knowing, so it is refused here.
    """
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources"}
    assert not unsupported, f"extend render() in this test to apply {sorted(unsupported)}"
    objects: list[Obj] = []
    for name in kustomization["resources"]:
        objects.extend(load(directory / name))
    return objects


def load(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def by_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[Obj], kind: str) -> Obj:
    (obj,) = by_kind(objects, kind)
    return obj


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    return render()


@pytest.fixture(scope="module")
def pod(objects: list[Obj]) -> Obj:
    spec: Obj = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: Obj) -> Obj:
    (main,) = pod["containers"]
    assert isinstance(main, dict)
    return main


def all_manifests() -> list[Any]:
    """Every object `kubectl apply -k` applies, and the example Secret, as pytest params."""
    params = [pytest.param(obj, id=f"{obj['kind']}/{obj['metadata']['name']}") for obj in render()]
    for obj in load(SECRET_EXAMPLE):
        params.append(pytest.param(obj, id=f"example-{obj['kind']}/{obj['metadata']['name']}"))
    return params


@pytest.mark.parametrize("obj", all_manifests())
def test_every_manifest_is_valid_kubernetes(obj: Obj) -> None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(map(str, exc.path))
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {where}")


def test_every_file_in_the_directory_is_listed_or_the_example(objects: list[Obj]) -> None:
    listed = set(yaml.safe_load((KUSTOMIZE_DIR / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in KUSTOMIZE_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert present - listed == {SECRET_EXAMPLE.name}


def test_the_manifests_are_namespace_agnostic(objects: list[Obj]) -> None:
    assert not by_kind(objects, "Namespace")
    assert [o["metadata"]["name"] for o in objects if "namespace" in o["metadata"]] == []


def test_the_example_secret_is_not_applied_and_holds_only_placeholders(objects: list[Obj]) -> None:
    assert not by_kind(objects, "Secret")
    (secret,) = load(SECRET_EXAMPLE)
    values = secret["stringData"]
    assert set(values) == {
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "DATABASE_URL",
    }
    assert all("PLACEHOLDER" in value for value in values.values())
    assert values["DATABASE_URL"].startswith("postgresql+psycopg://")


def test_two_replicas_a_disruption_budget_and_a_service(objects: list[Obj]) -> None:
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    assert pdb["spec"]["minAvailable"] == 1
    assert one(objects, "Service")["spec"]["selector"] == labels


def test_the_pod_is_hardened(pod: Obj, container: Obj) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert sc.get("privileged", False) is False
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The only writable path is /tmp, an emptyDir.
    volumes = {v["name"]: v for v in pod["volumes"]}
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]
    assert all(m.get("readOnly") for m in container["volumeMounts"] if m is not tmp)
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def test_the_image_runs_as_the_pods_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert users == [("10001", "10001")], "the image must run as a numeric non-root UID"
    assert 'ENTRYPOINT ["debug-access"]' in dockerfile
    assert 'CMD ["serve"]' in dockerfile
    assert "PYTHONDONTWRITEBYTECODE=1" in dockerfile


def env_of(objects: list[Obj], container: Obj) -> dict[str, str]:
    """Every variable the container gets, from `env` and the ConfigMaps/Secret in `envFrom`."""
    env: dict[str, str] = {}
    configmaps = {o["metadata"]["name"]: o for o in by_kind(objects, "ConfigMap")}
    (secret,) = load(SECRET_EXAMPLE)
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]]["data"])
        else:
            assert source["secretRef"]["name"] == secret["metadata"]["name"]
            env.update(secret["stringData"])
    env.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
    return env


def test_every_variable_is_one_the_bot_reads(objects: list[Obj], container: Obj) -> None:
    known = {name.upper() for name in Settings.model_fields} | {"DEBUG_ACCESS_POLICY"}
    env = env_of(objects, container)
    assert set(env) - known == set()
    assert env["VAULT_AUTH_METHOD"] == "kubernetes"
    assert env["VAULT_AUTH_ROLE"]


def test_the_probes_hit_the_health_routes_on_the_serve_port(
    objects: list[Obj], container: Obj
) -> None:
    env = env_of(objects, container)
    port = int(env.get("PORT", Settings.model_fields["port"].default))
    (named,) = [p for p in container["ports"] if p["name"] == "http"]
    assert named["containerPort"] == port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(port)


def test_the_service_account_is_the_one_vault_logs_in_with(objects: list[Obj], pod: Obj) -> None:
    account = one(objects, "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod.get("automountServiceAccountToken", True) is True  # VAULT_JWT_FILE's default


def test_the_mounted_policy_is_where_the_bot_looks_and_is_valid(
    objects: list[Obj], pod: Obj, container: Obj
) -> None:
    path = Path(env_of(objects, container)["DEBUG_ACCESS_POLICY"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    configmap = next(
        o
        for o in by_kind(objects, "ConfigMap")
        if o["metadata"]["name"] == volume["configMap"]["name"]
    )
    policy = parse_policy(configmap["data"][path.name], source=str(path))
    assert policy.resources


# --- Prometheus alert rules -------------------------------------------------------------------

#: The metrics the bot exports (issue 11), name -> type.
METRICS = {
    "debug_access_requests_total": "counter",
    "debug_access_approval_wait_seconds": "histogram",
    "debug_access_issue_seconds": "histogram",
    "debug_access_active_grants": "gauge",
    "debug_access_pending_requests": "gauge",
    "debug_access_revocations_total": "counter",
    "debug_access_grants_overdue": "gauge",
    "debug_access_users_locked": "gauge",
    "debug_access_locked_live_grants": "gauge",
    "debug_access_vault_errors_total": "counter",
    "debug_access_slack_errors_total": "counter",
    "debug_access_vault_token_ttl_seconds": "gauge",
}
DURATION = re.compile(r"^\d+[smhdwy]$")


def rules() -> list[Obj]:
    data = yaml.safe_load(ALERTS.read_text())
    assert set(data) == {"groups"}
    found = []
    for group in data["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"]
        found.extend(group["rules"])
    return found


def series_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression, histogram series mapped to their histogram."""
    names = set(re.findall(r"\bdebug_access_[a-z0-9_]+", expr))
    out = set()
    for name in names:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        out.add(base if METRICS.get(base) == "histogram" else name)
    return out


def test_the_alert_rules_parse_as_rule_groups() -> None:
    found = rules()
    assert found
    names = [rule["alert"] for rule in found]
    assert len(names) == len(set(names))
    for rule in found:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert DURATION.match(rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_overdue_grants_alert_pages() -> None:
    (overdue,) = [r for r in rules() if "debug_access_grants_overdue" in r["expr"]]
    assert overdue["labels"]["severity"] == "page"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_expression_uses_exported_metrics_and_balances(rule: Obj) -> None:
    expr = rule["expr"]
    used = series_names(expr)
    assert used, "an alert on no debug-access metric"
    assert used <= set(METRICS), f"unknown metrics: {sorted(used - set(METRICS))}"
    for name in re.findall(r"\bdebug_access_[a-z0-9_]+_bucket\b", expr):
        assert "histogram_quantile" in expr, f"{name} outside histogram_quantile"
    for name in used:
        if METRICS[name] == "counter":
            assert re.search(rf"\b(rate|increase)\(\s*{name}\b", expr), f"{name} without rate()"
    stack = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            assert stack and stack.pop() == pairs[char], f"unbalanced {char!r} in {expr!r}"
    assert not stack, f"unclosed {stack} in {expr!r}"
