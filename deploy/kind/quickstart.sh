#!/usr/bin/env bash
# Training Agent on a local kind cluster, end to end, with no cloud account:
#   1. create the kind cluster (if missing)
#   2. build the control-plane image and a CPU trainer image, and load both into kind
#   3. helm install with values-dev.yaml: the chart plus its dev stack (PostgreSQL carrying the migration,
#      PostgREST at /rest/v1, fake-gcs-server)
#   4. seed a demo project and dataset, start it over HTTP as the MCP server would, and follow it
#      (`training-agent demo --api-url`), while `kubectl get tr -w` shows the TrainingRun
# Needs: docker, kind, kubectl, helm, and `make setup` done (for the demo client in .venv).
# Run from anywhere: deploy/kind/quickstart.sh   Clean up: kind delete cluster --name training-agent
set -euo pipefail

CLUSTER="${CLUSTER:-training-agent}"
NAMESPACE="${NAMESPACE:-training-agent}"
RELEASE="${RELEASE:-training-agent}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON_IMAGE="python:3.12.8-slim-bookworm"
TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"

step() { printf '\n==> %s\n' "$*"; }

for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || { echo "quickstart: $tool is not installed" >&2; exit 1; }
done
[ -x "$REPO/.venv/bin/training-agent" ] || { echo "quickstart: run 'make setup' first" >&2; exit 1; }

step "kind cluster '$CLUSTER'"
if ! kind get clusters | grep -qx "$CLUSTER"; then
    kind create cluster --name "$CLUSTER" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

step "images"
docker build -f "$REPO/control-plane-image/Dockerfile" -t training-agent:dev "$REPO"
# kind has no GPU: the trainer gets CPU torch on a slim base instead of the CUDA image.
docker build -f "$REPO/trainer-image/Dockerfile" -t training-agent-trainer:dev \
    --build-arg PYTORCH_IMAGE="$PYTHON_IMAGE" --build-arg TORCH_INDEX_URL="$TORCH_CPU_INDEX" "$REPO"
kind load docker-image --name "$CLUSTER" training-agent:dev training-agent-trainer:dev

step "helm install $RELEASE (namespace $NAMESPACE)"
helm upgrade --install "$RELEASE" "$REPO/deploy/helm/training-agent" \
    --namespace "$NAMESPACE" --create-namespace \
    -f "$REPO/deploy/kind/values-dev.yaml" --wait --timeout 10m

step "port-forwards: API :8000, PostgREST :54321, fake-gcs-server :4443"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
kubectl -n "$NAMESPACE" port-forward "svc/$RELEASE-api" 8000:80 >/dev/null &
pids+=("$!")
kubectl -n "$NAMESPACE" port-forward "svc/$RELEASE-supabase" 54321:8080 >/dev/null &
pids+=("$!")
kubectl -n "$NAMESPACE" port-forward "svc/$RELEASE-fake-gcs" 4443:4443 >/dev/null &
pids+=("$!")
for _ in $(seq 60); do
    curl -fsS http://127.0.0.1:8000/ready >/dev/null 2>&1 && break
    sleep 2
done
curl -fsS http://127.0.0.1:8000/ready

step "TrainingRuns (kubectl get tr -w)"
kubectl -n "$NAMESPACE" get tr -w &
pids+=("$!")

step "demo project: seed, POST /agents/training/start, follow to pending_evaluation"
# The same records and bucket the cluster uses, reached through the port-forwards.
SUPABASE_URL=http://127.0.0.1:54321 SUPABASE_KEY=dev-only-key \
GCP_BUCKET_NAME=training-agent-dev STORAGE_EMULATOR_HOST=http://127.0.0.1:4443 \
    "$REPO/.venv/bin/training-agent" demo --api-url http://127.0.0.1:8000 --epochs 2 --no-pretrained
