"""deploy/k8s/, the kustomize base, checked offline (no cluster, no kubectl, no network):

- yamllint (deploy/k8s/.yamllint.yaml) on every file;
- the base rendered in Python (kubectl is not available): the resources kustomization.yaml lists,
  with the two transformers it uses (``labels`` without selectors, ``images``); a field the
  renderer does not know fails the test instead of being ignored;
- every rendered object against the Kubernetes OpenAPI schemas that ship inside the
  ``kubernetes-validate`` package (strict: unknown fields refused), for the oldest and the newest
  Kubernetes version we support;
- the objects against each other and the code: selectors match the pods, probes hit /livez and
  /readyz (URLs of the project), the HPA scales a Deployment whose pods request CPU, config comes
  from the ConfigMap and Secret defined here, exactly one beat.
"""

from __future__ import annotations

import copy
import socket
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from django.urls import resolve
from yamllint import linter
from yamllint.config import YamlLintConfig

BASE = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
KNOWN_FIELDS = {"apiVersion", "kind", "labels", "resources", "images"}


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return data


def render() -> list[dict[str, Any]]:
    """``kustomize build deploy/k8s`` for the transformers this base uses."""
    kust = kustomization()
    unknown = set(kust) - KNOWN_FIELDS
    assert not unknown, f"kustomization.yaml uses {unknown}: teach render() or drop them"
    objects: list[dict[str, Any]] = []
    for name in kust["resources"]:
        objects.extend(doc for doc in yaml.safe_load_all((BASE / name).read_text()) if doc)
    for entry in kust.get("labels", []):
        assert entry.get("includeSelectors") is False  # selectors are the manifests' own
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
            template = obj.get("spec", {}).get("template")
            if entry.get("includeTemplates") and template:
                template.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    images = {image["name"]: image for image in kust.get("images", [])}
    for obj in objects:
        spec = pod_spec(obj)
        for container in spec["containers"] if spec else []:
            image = images.get(container["image"])
            if image:
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return objects


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    template = obj.get("spec", {}).get("template")
    return template["spec"] if template else None


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_yamllint_passes_on_every_file() -> None:
    config = YamlLintConfig(file=str(BASE / ".yamllint.yaml"))
    files = sorted(BASE.glob("*.yaml"))
    assert len(files) >= 10
    problems = [
        f"{path.name}:{p.line}: {p.desc}"
        for path in files
        for p in linter.run(path.read_text(), config, str(path))
    ]
    assert problems == []


def test_every_manifest_is_listed_once_and_exists() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml", ".yamllint.yaml"}
    assert set(listed) == on_disk


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network for the validator: its schemas must come from the package."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("network access during an offline check")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_rendered_base_is_valid_against_the_kubernetes_schemas(version: str, offline: None) -> None:
    objects = render()
    kinds = sorted(o["kind"] for o in objects)
    expected = ["ConfigMap", "Secret", "Deployment", "Deployment", "Deployment", "Service", "Service"]
    expected += ["PodDisruptionBudget", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Job"]
    assert kinds == sorted(expected)
    for obj in objects:
        kubernetes_validate.validate(copy.deepcopy(obj), version, strict=True)  # raises if not
    # The validator does refuse: an unknown field and a wrong type.
    broken = copy.deepcopy(by_kind(objects, "Deployment")["healthchat-web"])
    broken["spec"]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)
    broken = copy.deepcopy(by_kind(objects, "HorizontalPodAutoscaler")["healthchat-web"])
    broken["spec"]["minReplicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_the_objects_fit_together_and_the_code() -> None:
    objects = render()
    deployments = by_kind(objects, "Deployment")
    assert set(deployments) == {"healthchat-web", "healthchat-worker", "healthchat-beat"}
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "healthchat"
    for deployment in deployments.values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["image"] == "healthchat:latest"
            refs = {(k, v["name"]) for ref in container["envFrom"] for k, v in ref.items()}
            assert refs == {("configMapRef", "healthchat-config"), ("secretRef", "healthchat-secrets")}
    # Services and budgets select pods of a Deployment.
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    for kind, path in (
        ("Service", ("spec", "selector")),
        ("PodDisruptionBudget", ("spec", "selector", "matchLabels")),
    ):
        for obj in by_kind(objects, kind).values():
            selector = obj
            for key in path:
                selector = selector[key]
            assert any(selector.items() <= labels.items() for labels in pod_labels), obj["metadata"]["name"]
    # The web pods: readiness on /readyz, liveness on /livez, both real URLs of the project.
    web = deployments["healthchat-web"]["spec"]["template"]["spec"]["containers"][0]
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web["livenessProbe"]["httpGet"]["path"] == "/livez"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        path = web[probe]["httpGet"]["path"]
        assert resolve(path).url_name in {"readyz", "livez"}
        assert web[probe]["httpGet"]["port"] in {p["name"] for p in web["ports"]}
        # the kubelet's Host header must be an allowed host
        host = {h["name"]: h["value"] for h in web[probe]["httpGet"]["httpHeaders"]}["Host"]
        config = by_kind(objects, "ConfigMap")["healthchat-config"]["data"]
        assert host in config["ALLOWED_HOSTS"].split(",")
    # The HPA scales the web Deployment on CPU, which its pods request.
    (hpa,) = by_kind(objects, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "healthchat-web",
    }
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "cpu" in web["resources"]["requests"]
    assert hpa["spec"]["minReplicas"] >= 2  # with maxUnavailable 1 in its budget: never none
    # Exactly one beat, replaced (not rolled: two would queue periodic tasks twice).
    beat = deployments["healthchat-beat"]["spec"]
    assert beat["replicas"] == 1
    assert beat["strategy"]["type"] == "Recreate"
    # Every secret the Secret names is empty here: the overlay brings the values.
    (secret,) = by_kind(objects, "Secret").values()
    assert set(secret["stringData"].values()) == {""}
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"} <= set(secret["stringData"])
