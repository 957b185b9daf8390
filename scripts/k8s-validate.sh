#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/kubernetes/ with no cluster
# and no network beyond PyPI (once, for the venv):
#
#   1. renders the base and every overlay with scripts/k8s_render.py (a small
#      kustomize for exactly the features the manifests use), and, where
#      `kubectl` is installed, checks that `kubectl kustomize` renders the same;
#   2. validates every base manifest, the Secret template and both renderings
#      against the Kubernetes JSON schemas bundled in kubernetes-validate, in
#      strict mode (an unknown field fails), for the oldest Kubernetes the
#      manifests support (1.30: the preStop sleep action) and the newest the
#      validator knows; an object whose kind it has no schema for fails too;
#   3. checks each rendering's sluice.toml (the ConfigMap's): it parses as
#      TOML, uses only keys the config structs in src/ declare, gets every
#      ${VAR} from the container's env (and every Secret key from the
#      template), and agrees with the Deployment on ports, volumes, probes and
#      the shutdown arithmetic (terminationGracePeriodSeconds).
#
# The venv is cached in ${XDG_CACHE_HOME:-$HOME/.cache}/sluice-k8s-venv and
# rebuilt when the pinned requirements change. Prints one summary line and
# exits non-zero on any failure.
#   scripts/k8s-validate.sh
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
KUBE_VERSIONS=(1.30.0 1.37.0)
deploy=deploy/kubernetes
requirements=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "PyYAML>=6,<7")
if ! python3 -c 'import tomllib' 2>/dev/null; then
  requirements+=("tomli>=2,<3")
fi

fail() {
  echo "k8s-validate: FAILED: $*" >&2
  exit 1
}

cache=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}
venv=$cache/sluice-k8s-venv
mkdir -p "$cache"

# One builder at a time; a venv whose pins differ (or that is broken) is
# made anew.
ensure_venv() {
  local want
  want=$(printf '%s\n' "${requirements[@]}")
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.sluice-requirements" 2>/dev/null)" = "$want" ] &&
    "$venv/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
    return 0
  fi
  rm -rf "$venv"
  python3 -m venv "$venv" || fail "python3 -m venv $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input "${requirements[@]}" ||
    fail "pip install ${requirements[*]}"
  printf '%s\n' "$want" >"$venv/.sluice-requirements"
}
if command -v flock >/dev/null; then
  exec 9>"$venv.lock"
  flock 9
fi
ensure_venv
if command -v flock >/dev/null; then
  flock -u 9
fi
py=$venv/bin/python
validator=$venv/bin/kubernetes-validate

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. Render.
kustomizations=("$deploy/base")
shopt -s nullglob
for overlay in "$deploy"/overlays/*/; do
  kustomizations+=("${overlay%/}")
done
shopt -u nullglob
rendered=()
crosschecked=0
kubectl_ok=0
if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
  kubectl_ok=1
fi
for dir in "${kustomizations[@]}"; do
  out=$work/$(echo "$dir" | tr / _).yaml
  "$py" scripts/k8s_render.py render "$dir" >"$out" 2>"$work/render.err" ||
    fail "render $dir: $(cat "$work/render.err")"
  if [ "$kubectl_ok" = 1 ]; then
    kubectl kustomize "$dir" >"$out.kubectl" 2>"$work/kubectl.err" ||
      fail "kubectl kustomize $dir: $(cat "$work/kubectl.err")"
    "$py" scripts/k8s_render.py compare "$out" "$out.kubectl" 2>"$work/compare.err" ||
      fail "scripts/k8s_render.py and kubectl kustomize disagree on $dir: $(cat "$work/compare.err")"
    crosschecked=$((crosschecked + 1))
  fi
  rendered+=("$out")
done

# 2. Schemas, strict. Patches in overlays are partial objects: they are
# validated as part of their overlay's rendering.
manifests=()
for file in "$deploy"/base/*.yaml; do
  [ "$(basename "$file")" = kustomization.yaml ] || manifests+=("$file")
done
objects=0
for version in "${KUBE_VERSIONS[@]}"; do
  status=0
  "$validator" --strict -k "$version" "${manifests[@]}" "${rendered[@]}" >"$work/validate.out" 2>&1 ||
    status=$?
  if [ "$status" != 0 ] || grep -Eq '^(WARN|ERROR|FATAL)' "$work/validate.out" ||
    ! grep -q '^INFO' "$work/validate.out"; then
    grep -Ev '^INFO' "$work/validate.out" | sed "s|$work/||" >&2 || true
    fail "kubernetes-validate --strict -k $version"
  fi
  objects=$(grep -c '^INFO' "$work/validate.out")
done

# 3. The config each rendering carries, and how the Deployment runs it.
for out in "${rendered[@]}"; do
  "$py" scripts/k8s_render.py check-fleet "$out" --src src \
    --secret "$deploy/base/secret.example.yaml" 2>"$work/check.err" || {
    sed "s|$work/||" "$work/check.err" >&2
    fail "check-fleet $(basename "$out")"
  }
done

overlays=$((${#kustomizations[@]} - 1))
if [ "$kubectl_ok" = 1 ]; then
  crosscheck="identical to kubectl kustomize"
else
  crosscheck="kubectl not installed: not cross-checked"
fi
echo "k8s-validate: ok: base + $overlays overlay(s) rendered ($crosscheck);" \
  "$objects objects in ${#manifests[@]} manifests and ${#rendered[@]} renderings valid against" \
  "Kubernetes ${KUBE_VERSIONS[*]} (kubernetes-validate $KUBERNETES_VALIDATE_VERSION --strict);" \
  "sluice.toml keys, \${VAR}s and fleet wiring consistent"
