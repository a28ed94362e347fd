#!/usr/bin/env bash
# Load Ray's Grafana dashboards (default, data, train, serve, LLM ...) into Grafana, as KubeRay's
# docs advise for a Ray version without ready-made JSON: copy the ones the running Ray generated
# (/tmp/ray/session_latest/metrics/grafana/dashboards on a head pod), so they match the image's
# Ray. kube-prometheus-stack's Grafana sidecar loads every ConfigMap labelled grafana_dashboard=1
# in its namespace. Server-side apply: the data dashboard is too large for client-side apply's
# last-applied annotation.
#   infra/k8s/monitoring/import-ray-dashboards.sh [NAMESPACE (mvlp)] [GRAFANA_NAMESPACE (prometheus-system)]
set -euo pipefail
ns=${1:-mvlp}
grafana_ns=${2:-prometheus-system}
head=$(kubectl -n "$ns" get pods -l ray.io/cluster=mvlp,ray.io/node-type=head \
  -o jsonpath='{.items[0].metadata.name}')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
kubectl -n "$ns" exec "$head" -c ray-head -- \
  tar -C /tmp/ray/session_latest/metrics/grafana/dashboards -cf - . | tar -xf - -C "$tmp"
for f in "$tmp"/*.json; do
  name="ray-$(basename "$f" .json | tr '_' '-')"
  kubectl -n "$grafana_ns" create configmap "$name" --from-file="$f" --dry-run=client -o yaml \
    | kubectl label --local -f - grafana_dashboard=1 -o yaml \
    | kubectl apply --server-side --force-conflicts -f -
done
echo "imported $(ls "$tmp"/*.json | wc -l) dashboards into $grafana_ns"
