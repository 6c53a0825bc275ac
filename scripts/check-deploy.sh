#!/usr/bin/env bash
# Checks the deployment files in deploy/: the alerting rules and their unit
# tests (promtool), the Kubernetes manifests against the API schemas
# (kubernetes-validate, offline), the Compose file, and the Grafana
# dashboard's JSON. Installs what it needs when missing: promtool from
# Debian's prometheus package, kubernetes-validate from PyPI.
#
#   scripts/check-deploy.sh
#
# tests/prometheus.rs checks the dashboard's and the rules' queries against
# a real Prometheus scraping a real gateway; this checks the files alone.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes version the manifests are validated against; one whose
# schemas the pinned kubernetes-validate ships.
k8s_version=1.35.0
k8s_validate=kubernetes-validate==1.37.0

sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing prometheus (promtool) from Debian"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# shellcheck source=scripts/pytools.sh
. scripts/pytools.sh
pytool kubernetes-validate "$k8s_validate"

echo "== promtool check rules"
promtool check rules deploy/prometheus/alerts.yml
echo "== promtool test rules"
promtool test rules deploy/prometheus/alerts_test.yml
echo "== prometheus.yml"
promtool check config deploy/prometheus/prometheus.yml

echo "== kubernetes-validate (Kubernetes $k8s_version)"
kubernetes-validate --strict --kubernetes-version "$k8s_version" deploy/k8s/*.yaml

echo "== docker-compose.yml"
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  docker compose -f deploy/docker-compose.yml config -q
elif command -v docker-compose >/dev/null 2>&1; then
  docker-compose -f deploy/docker-compose.yml config -q
else
  # No Compose here: parse the YAML (PyYAML comes with kubernetes-validate)
  # and check what the file promises: a health check on every service.
  python3 - deploy/docker-compose.yml <<'PY'
import sys, yaml
compose = yaml.safe_load(open(sys.argv[1]))
services = compose["services"]
missing = [name for name, service in services.items() if "healthcheck" not in service]
if missing:
    sys.exit(f"{sys.argv[1]}: no healthcheck for {', '.join(missing)}")
print(f"{sys.argv[1]}: {len(services)} services parse, each with a healthcheck (no docker compose here)")
PY
fi

echo "== Grafana dashboard and provisioning"
python3 - deploy/grafana/wagate.json deploy/grafana/provisioning/*/*.yml <<'PY'
import json, sys, yaml
dashboard = json.load(open(sys.argv[1]))
def targets(panels):
    for panel in panels:
        yield from panel.get("targets", [])
        yield from targets(panel.get("panels", []))
exprs = [t["expr"] for t in targets(dashboard["panels"]) if t.get("expr")]
ids = [p["id"] for p in dashboard["panels"]]
assert len(ids) == len(set(ids)), "panel ids are unique"
assert dashboard["schemaVersion"] >= 36, dashboard["schemaVersion"]
for path in sys.argv[2:]:
    yaml.safe_load(open(path))
print(f"{sys.argv[1]}: {len(dashboard['panels'])} panels, {len(exprs)} queries; provisioning parses")
PY
echo "deploy files OK"
