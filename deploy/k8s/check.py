"""Checks on a rendered overlay (kubectl kustomize output) that a schema cannot make: the manifests against the
server's own settings and lifecycle (service/settings.py, service/server.py, docker/serve.Dockerfile).

    python deploy/k8s/check.py rendered.yaml   -> one line per problem, exit 1; exit 0 when there is none
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

IMAGE_UID = 10001  # docker/*.Dockerfile: useradd --uid 10001
MIN_STARTUP_S = 60  # model load + warm-up: about 3 s on 2 CPUs; CUDA start-up much longer
MAX_AUTO_WORKERS = 8  # service/settings.py: G2P_WORKERS=0 takes the CPU quota, at most 8
MIN_MEMORY = 1 << 30  # docker-compose.yml's mem_limit: 1g
UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}


def cpus(q: object) -> float:
    s = str(q)
    return int(s[:-1]) / 1000 if s.endswith("m") else float(s)


def mem_bytes(q: object) -> int:
    m = re.fullmatch(r"(\d+)([A-Za-z]*)", str(q))
    if not m or m.group(2) not in UNITS:
        raise ValueError(f"cannot read the memory quantity {q!r}")
    return int(m.group(1)) * UNITS[m.group(2)]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check(docs: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []

    def need(ok: bool, msg: str) -> None:
        if not ok:
            problems.append(msg)

    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    for kind in ("Deployment", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
        need(len(by_kind.get(kind, [])) == 1, f"expected one {kind}, found {len(by_kind.get(kind, []))}")
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    if problems:
        return problems

    dep = by_kind["Deployment"][0]
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    labels = pod["metadata"].get("labels", {})
    need(selects(dep["spec"]["selector"]["matchLabels"], labels), "Deployment: its selector misses its pod labels")
    need("replicas" not in dep["spec"], "Deployment: replicas is set; the HorizontalPodAutoscaler owns the count")
    containers = {c["name"]: c for c in spec["containers"]}
    need("g2p" in containers, "Deployment: no container named g2p")
    if problems:
        return problems
    c = containers["g2p"]

    # settings: the ConfigMap the container reads (envFrom), with the image's defaults
    cm = by_kind["ConfigMap"][0]
    refs = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
    need(cm["metadata"]["name"] in refs, "container: envFrom does not name the G2P_* ConfigMap")
    env = {"G2P_PORT": "50051", "G2P_HEALTH_PORT": "50052", "G2P_METRICS_PORT": "8000", "G2P_SHUTDOWN_GRACE_S": "10"}
    env.update({k: str(v) for k, v in cm.get("data", {}).items()})
    need(all(k.startswith("G2P_") for k in env), "ConfigMap: a key that is not a G2P_* setting")
    port, metrics_port = int(env["G2P_PORT"]), int(env["G2P_METRICS_PORT"])
    need(env.get("G2P_HOST") == "0.0.0.0", "ConfigMap: G2P_HOST must be 0.0.0.0 (probes and Services reach the pod IP)")
    need(env.get("G2P_METRICS_HOST") == "0.0.0.0", "ConfigMap: G2P_METRICS_HOST must be 0.0.0.0 (Prometheus)")
    need(spec.get("enableServiceLinks") is False,
         "pod: enableServiceLinks must be false: a Service named g2p injects G2P_PORT=tcp://... into the container, "
         "which the server reads as its port setting and refuses")  # fmt: skip

    # ports, probes
    ports = {p["containerPort"]: p.get("name") for p in c.get("ports", [])}
    need(ports.get(port) == "grpc", f"container: no port named grpc on G2P_PORT {port}")
    need(ports.get(metrics_port) == "metrics", f"container: no port named metrics on G2P_METRICS_PORT {metrics_port}")
    # the probes ask the health side port, which answers while the main port refuses a flood; without one, G2P_PORT
    health_port = int(env["G2P_HEALTH_PORT"]) if int(env["G2P_HEALTH_PORT"]) > 0 else port
    if health_port != port:
        need(ports.get(health_port) == "health", f"container: no port named health on G2P_HEALTH_PORT {health_port}")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = c.get(probe)
        need(p is not None and p.get("grpc", {}).get("port") == health_port,
             f"container: {probe} must be a grpc probe on port {health_port} (grpc.health.v1)")  # fmt: skip
    sp = c.get("startupProbe") or {}
    startup_s = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3)
    need(startup_s >= MIN_STARTUP_S, f"startupProbe: {startup_s} s to start is less than {MIN_STARTUP_S} s")

    # resources: the CPU limit is the cgroup quota the server sizes its workers by
    res = c.get("resources", {})
    lim, req = res.get("limits", {}), res.get("requests", {})
    need("cpu" in lim and "memory" in lim, "resources: set CPU and memory limits")
    if "cpu" in lim:
        cpu = cpus(lim["cpu"])
        need(cpu == int(cpu) and cpu >= 1, f"resources: CPU limit {lim['cpu']} must be a whole number of CPUs "
             "(the server rounds the cgroup quota down to size its workers)")  # fmt: skip
        workers, threads = int(env.get("G2P_WORKERS", "0")), int(env.get("G2P_INTRA_OP_THREADS", "0"))
        if workers and threads:
            need(workers * threads == cpu, f"G2P_WORKERS x G2P_INTRA_OP_THREADS = {workers * threads} differs from "
                 f"the CPU limit {lim['cpu']}")  # fmt: skip
        elif not workers and env.get("G2P_PROVIDERS", "cpu") != "cuda":
            need(cpu <= MAX_AUTO_WORKERS, f"resources: CPU limit {lim['cpu']} exceeds the {MAX_AUTO_WORKERS} workers "
                 "G2P_WORKERS=0 starts: set G2P_WORKERS and G2P_INTRA_OP_THREADS")  # fmt: skip
    if "memory" in lim:
        need(mem_bytes(lim["memory"]) >= MIN_MEMORY, f"resources: memory limit {lim['memory']} under 1Gi")
    for r in ("cpu", "memory"):
        need(r in req and str(req[r]) == str(lim.get(r)), f"resources: {r} request differs from its limit "
             "(Guaranteed QoS; the autoscaler's utilisation is of the request)")  # fmt: skip
    gpus = int(lim.get("nvidia.com/gpu", 0))
    cuda = env.get("G2P_PROVIDERS") == "cuda"
    need(gpus >= 1 if cuda else gpus == 0, f"G2P_PROVIDERS={env.get('G2P_PROVIDERS', 'cpu')} with "
         f"nvidia.com/gpu={gpus}")  # fmt: skip

    # security
    psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
    need(psc.get("runAsNonRoot") is True or csc.get("runAsNonRoot") is True, "securityContext: runAsNonRoot")
    need(csc.get("runAsUser", psc.get("runAsUser")) == IMAGE_UID, f"securityContext: runAsUser {IMAGE_UID}")
    seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {}))
    need(seccomp.get("type") == "RuntimeDefault", "securityContext: seccompProfile RuntimeDefault")
    need(csc.get("allowPrivilegeEscalation") is False, "securityContext: allowPrivilegeEscalation false")
    need(csc.get("readOnlyRootFilesystem") is True, "securityContext: readOnlyRootFilesystem true")
    need(csc.get("capabilities", {}).get("drop") == ["ALL"], "securityContext: capabilities drop ALL")
    need(spec.get("automountServiceAccountToken") is False, "pod: automountServiceAccountToken false")

    # the model repository is read-only
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    repo = env.get("G2P_MODEL_REPOSITORY", "/models")
    for m in c.get("volumeMounts", []):
        if m["mountPath"] == repo or m["mountPath"].startswith(repo.rstrip("/") + "/"):
            need(m.get("readOnly") is True, f"volumeMounts: the model repository {m['mountPath']} must be readOnly")
            claim = volumes.get(m["name"], {}).get("persistentVolumeClaim")
            if claim is not None:
                need(claim.get("readOnly") is True, f"volumes: {m['name']}: persistentVolumeClaim readOnly: true")

    # shutdown: endpoints leave before SIGTERM, the drain ends before SIGKILL
    pre = c.get("lifecycle", {}).get("preStop", {})
    need(bool(pre), "container: no preStop hook (endpoints must update before SIGTERM)")
    sleep_s = pre.get("sleep", {}).get("seconds", 0)
    if "exec" in pre:
        nums = [int(x) for x in pre["exec"].get("command", []) if str(x).isdigit()]
        sleep_s = nums[-1] if nums else 0
    need(sleep_s > 0, "preStop: sleep a few seconds")
    grace = float(env["G2P_SHUTDOWN_GRACE_S"])
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    need(tgps > sleep_s + grace + 1, f"terminationGracePeriodSeconds {tgps} must exceed preStop {sleep_s} s + "
         f"G2P_SHUTDOWN_GRACE_S {grace:g} s + 1 s")  # fmt: skip

    # Prometheus
    ann = pod["metadata"].get("annotations", {})
    need(ann.get("prometheus.io/scrape") == "true", 'pod annotation prometheus.io/scrape: "true"')
    need(ann.get("prometheus.io/port") == str(metrics_port), f'pod annotation prometheus.io/port: "{metrics_port}"')
    need(ann.get("prometheus.io/path") == "/metrics", "pod annotation prometheus.io/path: /metrics")

    # Services, disruption budget, autoscaler
    headless = services.get("g2p-headless", {}).get("spec", {})
    cluster_ip = services.get("g2p", {}).get("spec", {})
    need(headless.get("clusterIP") == "None", "Service g2p-headless: clusterIP: None")
    need(bool(cluster_ip) and cluster_ip.get("clusterIP") != "None", "Service g2p: a ClusterIP Service")
    for name, s in (("g2p", cluster_ip), ("g2p-headless", headless)):
        need(selects(s.get("selector", {}), labels), f"Service {name}: its selector misses the pod labels")
        need(any(p.get("port") == port and p.get("targetPort") in ("grpc", port) for p in s.get("ports", [])),
             f"Service {name}: no port {port} to the grpc port")  # fmt: skip
    pdb = by_kind["PodDisruptionBudget"][0]["spec"]
    need(selects(pdb["selector"].get("matchLabels", {}), labels), "PodDisruptionBudget: selector misses the pods")
    hpa = by_kind["HorizontalPodAutoscaler"][0]
    need(hpa["apiVersion"] == "autoscaling/v2", "HorizontalPodAutoscaler: autoscaling/v2")
    target = hpa["spec"]["scaleTargetRef"]
    need(target["kind"] == "Deployment" and target["name"] == dep["metadata"]["name"],
         "HorizontalPodAutoscaler: scaleTargetRef is not the Deployment")  # fmt: skip
    need(any(m.get("resource", {}).get("name") == "cpu" and m["resource"]["target"]["type"] == "Utilization"
             for m in hpa["spec"]["metrics"]), "HorizontalPodAutoscaler: no CPU utilisation metric")  # fmt: skip
    min_replicas = hpa["spec"].get("minReplicas", 1)
    if "minAvailable" in pdb:
        need(int(pdb["minAvailable"]) < min_replicas, "PodDisruptionBudget: minAvailable blocks every eviction")
    else:
        need(min_replicas >= 2, "HorizontalPodAutoscaler: minReplicas < 2, a disruption leaves no pod serving")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    docs = [d for d in yaml.safe_load_all(Path(argv[0]).read_text()) if d]
    problems = check(docs)
    for p in problems:
        print(f"FAIL {argv[0]}: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
