#!/usr/bin/env bash
# `make demo`: sidekey's main job end to end on local defaults, in about a
# minute after the first build. It starts OpenBao (dev) and a private
# PostgreSQL, seeds secrets, injects a Deployment that carries secrets in env
# vars, runs the agent against OpenBao rendering into a local directory,
# rotates a secret, and shows the example app following rotating database
# credentials without a restart. Everything it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bold=$(tput bold 2>/dev/null || true); off=$(tput sgr0 2>/dev/null || true)
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$off"; }
note() { printf '    %s\n' "$*"; }

step "Building sidekey, sidekey-agent and the example app (cached after the first run)"
scripts/testenv.sh >/dev/null 2>&1 || scripts/testenv.sh
# shellcheck disable=SC1091
source "${SIDEKEY_CACHE:-$HOME/.cache/sidekey}/env.sh"
cargo build --quiet --locked -p sidekey -p sidekey-agent -p sidekey-example-app --bins
bin=$root/target/debug

work=$(mktemp -d /tmp/sidekey-demo.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "Starting OpenBao (dev mode) and PostgreSQL on loopback"
bao_port=$(free_port); export BAO_ADDR=http://127.0.0.1:$bao_port BAO_TOKEN=demo-root
HOME=$work "$SIDEKEY_BAO" server -dev -dev-no-store-token -dev-root-token-id=demo-root \
  -dev-listen-address="127.0.0.1:$bao_port" -log-level=error >"$work/bao.log" 2>&1 &
pids+=($!)
pg_port=$(free_port)
pgdata=$work/pg; mkdir -p "$pgdata"; echo demo-pg-password >"$work/pgpw"
as_pg=()
if [[ $(id -u) == 0 ]]; then chown -R postgres "$pgdata" "$work/pgpw"; as_pg=(runuser -u postgres --); fi
"${as_pg[@]}" "$SIDEKEY_PG_BIN/initdb" -D "$pgdata/data" -U postgres --auth-host=scram-sha-256 --auth-local=trust \
  --pwfile="$work/pgpw" --no-sync >/dev/null
"${as_pg[@]}" "$SIDEKEY_PG_BIN/postgres" -D "$pgdata/data" -p "$pg_port" -h 127.0.0.1 -k "$pgdata" -c fsync=off >"$work/pg.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "$BAO_ADDR/v1/sys/health" >/dev/null && break; sleep 0.1; done
for _ in $(seq 100); do PGPASSWORD=demo-pg-password "$SIDEKEY_PG_BIN/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -c 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
note "OpenBao $BAO_ADDR, PostgreSQL 127.0.0.1:$pg_port"

step "Seeding: a KV secret and a database role whose credentials live 6 s (max 12 s)"
api() { curl -sf -H "X-Vault-Token: $BAO_TOKEN" -X "$1" "$BAO_ADDR/v1/$2" ${3:+-d "$3"}; }
api POST secret/data/shop/orders '{"data":{"api_key":"demo-api-key-v1"}}' >/dev/null
api POST sys/mounts/database '{"type":"database"}' >/dev/null
api POST database/config/pg "{\"plugin_name\":\"postgresql-database-plugin\",\"allowed_roles\":\"*\",\"connection_url\":\"postgresql://{{username}}:{{password}}@127.0.0.1:$pg_port/postgres?sslmode=disable\",\"username\":\"postgres\",\"password\":\"demo-pg-password\"}" >/dev/null
api POST database/roles/orders "{\"db_name\":\"pg\",\"default_ttl\":6,\"max_ttl\":12,\"creation_statements\":[\"CREATE ROLE \\\"{{name}}\\\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';\"]}" >/dev/null
api POST sys/policies/acl/orders '{"policy":"path \"secret/data/shop/*\" { capabilities = [\"read\"] }\npath \"secret/metadata/shop/*\" { capabilities = [\"read\"] }\npath \"database/creds/orders\" { capabilities = [\"read\"] }\npath \"sys/leases/renew\" { capabilities = [\"update\"] }\npath \"sys/internal/ui/mounts/*\" { capabilities = [\"read\"] }"}' >/dev/null
api POST auth/token/create '{"policies":["orders"],"ttl":"1h"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["auth"]["client_token"])' >"$work/agent-token"

input=examples/workloads/orders-app.yaml
step "The workload today: database credentials as references in env vars ($input)"
grep -nE 'sidekey.dev|DB_|vault:' "$input" | sed 's/^/    /'

step "sidekey inject: the env vars become files the agent keeps current"
"$bin/sidekey" inject -f "$input" >"$work/injected.yaml" 2>"$work/warnings.txt"
"$bin/sidekey" inject -o json -f "$input" >"$work/injected.json" 2>/dev/null
grep -nE '_FILE|value: /run/secrets|name: sidekey-|restartPolicy: Always|readOnly: true' "$work/injected.yaml" | sed 's/^/    /'
note "(the full manifest: $(wc -l <"$work/injected.yaml") lines; no secret value in it)"

step "Running the agent from the injected spec (mount path mapped to $work/secrets, token auth for the demo)"
mkdir -p "$work/secrets"
python3 - "$work" "$BAO_ADDR" <<'PY' >"$work/agent.json"
import json, sys
work, addr = sys.argv[1], sys.argv[2]
pod = json.load(open(f"{work}/injected.json"))["spec"]["template"]["spec"]
agent = next(c for c in pod["initContainers"] if c["name"] == "sidekey-agent")
cfg = json.loads(next(e["value"] for e in agent["env"] if e["name"] == "SIDEKEY_CONFIG"))
cfg["mountPath"] = f"{work}/secrets"
if "stateDir" in cfg:  # the agent's own volume in a pod
    import os
    os.makedirs(f"{work}/state", exist_ok=True)
    cfg["stateDir"] = f"{work}/state"
cfg["vault"] = {"addr": addr, "auth": {"method": "token", "tokenPath": f"{work}/agent-token"}}
cfg["refresh"] = "2s"
print(json.dumps(cfg))
PY
SIDEKEY_CONFIG=$(cat "$work/agent.json") SIDEKEY_LOG=info "$bin/sidekey-agent" run >"$work/agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -e $work/secrets/api-key ]] && break; sleep 0.1; done
ls -l "$work/secrets" | sed 's/^/    /'
note "api-key = $(cat "$work/secrets/api-key")   (a demo value; real values are never printed)"

step "Rotating the KV secret: the file follows within the refresh (2 s)"
api POST secret/data/shop/orders '{"data":{"api_key":"demo-api-key-v2"}}' >/dev/null
start=$(date +%s.%N)
until [[ $(cat "$work/secrets/api-key") == demo-api-key-v2 ]]; do sleep 0.1; done
note "api-key = $(cat "$work/secrets/api-key") after $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s, no restart"

step "The example app queries PostgreSQL every 200 ms for 22 s while its credentials rotate"
env_of() { python3 -c "import json; pod=json.load(open('$work/injected.json'))['spec']['template']['spec']; app=pod['containers'][0]; print(next(e['value'] for e in app['env'] if e['name']=='$1').replace('/run/secrets/sidekey','$work/secrets'))"; }
DB_USERNAME_FILE=$(env_of DB_USERNAME_FILE) DB_PASSWORD_FILE=$(env_of DB_PASSWORD_FILE) \
  DB_HOST=127.0.0.1 DB_PORT=$pg_port RUN_SECONDS=22 "$bin/sidekey-example-app" 2>&1 | sed 's/^/    /'

step "What the agent did (its log carries paths and lease ids, never values)"
grep -E 'read the secret|lease reached|fetching a new credential|wrote the secret files' "$work/agent.log" | tail -8 | sed 's/^    //; s/^/    /'
step "Done: everything started by the demo is stopped"
