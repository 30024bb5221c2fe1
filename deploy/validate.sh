#!/usr/bin/env bash
# Offline validation of everything under deploy/ plus the Dockerfile.
# CI runs it; it needs python3 (3.9+) and PyPI for the first run only.
#
#   deploy/validate.sh
#
# Tools live in a venv, by default target/ops-venv (OPS_VENV to override),
# installed from deploy/requirements-validate.txt and reinstalled only when
# that file changes. Nothing here needs a Docker engine or a cluster.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

K8S_VERSION=1.30.0
VENV=${OPS_VENV:-$ROOT/target/ops-venv}
REQUIREMENTS=deploy/requirements-validate.txt

passed=0
failed=0
failed_steps=()

step() {
    local name=$1
    shift
    echo
    echo "==> $name"
    if "$@"; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        failed_steps+=("$name")
        echo "FAIL $name"
    fi
}

ensure_venv() {
    local stamp="$VENV/.requirements.sha256"
    local want
    want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
    if [[ -x $VENV/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
        echo "using tools in $VENV"
        return
    fi
    echo "installing validation tools into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$want" >"$stamp"
}

ensure_venv
BIN=$VENV/bin

mapfile -t K8S_MANIFESTS < <(find deploy/kubernetes -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort)

step "yamllint (strict) on deploy/**/*.yml|yaml" \
    "$BIN/yamllint" --strict -c deploy/.yamllint.yaml deploy/

step "kubernetes-validate --strict, Kubernetes $K8S_VERSION: ${K8S_MANIFESTS[*]}" \
    "$BIN/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" "${K8S_MANIFESTS[@]}"

step "compose-spec JSON schema: deploy/docker-compose.yml" \
    "$BIN/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.yml

# `docker compose config` also resolves interpolation and merges; it needs the
# compose plugin (not an engine), which is absent on some machines.
if docker compose version >/dev/null 2>&1; then
    step "docker compose config: deploy/docker-compose.yml" \
        docker compose -f deploy/docker-compose.yml config --quiet
else
    echo
    echo "==> docker compose config: skipped (no compose plugin here; the schema check above covers structure)"
fi

step "JSON syntax: deploy/rabbitmq/*.json" \
    "$BIN/python" -c 'import json, sys; [json.load(open(p)) for p in sys.argv[1:]]' deploy/rabbitmq/*.json

step "hadolint: Dockerfile" \
    "$BIN/hadolint" --failure-threshold warning Dockerfile

step "shellcheck: deploy/*.sh, tests/run.sh, .ci/*" \
    "$BIN/shellcheck" deploy/validate.sh deploy/send-test-webhook.sh tests/run.sh .ci/run \
    .ci/check-manifests .ci/check-production-binary

step "consistency checks (deploy/validate_manifests.py)" \
    "$BIN/python" deploy/validate_manifests.py

echo
if ((failed > 0)); then
    printf 'failed: %s\n' "${failed_steps[@]}"
fi
echo "validate: $passed passed, $failed failed"
((failed == 0))
