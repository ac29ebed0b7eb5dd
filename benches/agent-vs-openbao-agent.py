#!/usr/bin/env python3
"""Side by side: sidekey-agent and OpenBao Agent on the same workload.

Against one local OpenBao dev server (with an audit log to count requests):

1. N KV v2 secrets (N = 10 and 100) rendered to files, one template per
   secret for OpenBao Agent (token-file auto-auth), with the default refresh
   (5 min) and with 10 s: start-to-ready time (median of 6 starts with the
   default refresh; files on tmpfs as in a pod), RSS, CPU-seconds per minute
   and OpenBao requests per minute over a measurement window.
2. Dynamic PostgreSQL credentials with TTL 20 s / max TTL 60 s for 150 s:
   credentials issued, lease renewals, and the delay between issuing a lease
   and its first renewal.

Usage: benches/agent-vs-openbao-agent.py [--window SECONDS] [--dynamic SECONDS]
         [--sizes 10,100] [--binary PATH] [--only-sidekey]
Needs `make testenv` (bao, PostgreSQL binaries) and the agent: by default the
static musl binary the image ships (`scripts/build-static.sh`), else
`cargo build --profile agent -p sidekey-agent`. Prints a Markdown
table. Only loopback addresses are used.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from benchlib import (DB_SOURCE, Bao, Postgres, default_binary, kv_sources, proc_stats, secrets_dir,
                      start_bao_agent, start_sidekey, wait_ready)


def start(kind, binary, bao, token_file, out, names, refresh, workdir):
    if kind == "sidekey":
        return start_sidekey(binary, bao.addr, token_file, out, kv_sources(names), refresh)
    return start_bao_agent(bao, token_file, out, kv_sources(names), refresh, tempfile.mkdtemp(dir=workdir))


def start_times(kind, binary, bao, token_file, n, refresh, workdir, starts):
    """Start-to-ready times of `starts` fresh starts (one sample is noise on a
    shared 2-core machine): sorted, in ms."""
    names = [f"s{i}" for i in range(n)]
    times = []
    for _ in range(starts):
        out = secrets_dir(workdir)
        proc = start(kind, binary, bao, token_file, out, names, refresh, workdir)
        times.append(wait_ready(proc, out, names) * 1000)
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        shutil.rmtree(out, ignore_errors=True)
        time.sleep(0.5)
    return sorted(times)


def run_static(kind, binary, bao, token_file, n, refresh, window, workdir, starts=5):
    times = start_times(kind, binary, bao, token_file, n, refresh, workdir, starts) if refresh == "5m" else []
    out = secrets_dir(workdir)
    names = [f"s{i}" for i in range(n)]
    proc = start(kind, binary, bao, token_file, out, names, refresh, workdir)
    ready = wait_ready(proc, out, names)
    times = sorted(times + [ready * 1000])
    time.sleep(2)
    line0 = bao.audit_lines()
    _, _, cpu0 = proc_stats(proc.pid)
    time.sleep(window)
    rss, hwm, cpu1 = proc_stats(proc.pid)
    reqs = bao.requests_since(line0)
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    shutil.rmtree(out, ignore_errors=True)
    per_min = 60.0 / window
    reads = sum(1 for op, p, _ in reqs if op == "read" and p.startswith("secret/data/"))
    return {"ready_ms": times[len(times) // 2], "ready_min": times[0], "ready_max": times[-1], "rss_mib": rss / 1024, "peak_mib": hwm / 1024,
            "cpu_s_per_min": (cpu1 - cpu0) * per_min, "req_per_min": len(reqs) * per_min, "reads_per_min": reads * per_min}


def run_dynamic(kind, binary, bao, token_file, duration, workdir):
    out = secrets_dir(workdir)
    names = ["db"]
    line0 = bao.audit_lines()
    if kind == "sidekey":
        proc = start_sidekey(binary, bao.addr, token_file, out, [DB_SOURCE], "5m")
    else:
        proc = start_bao_agent(bao, token_file, out, [DB_SOURCE], "5m", tempfile.mkdtemp(dir=workdir))
    wait_ready(proc, out, names)
    time.sleep(duration)
    rss, _, cpu = proc_stats(proc.pid)
    reqs = bao.requests_since(line0)
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    shutil.rmtree(out, ignore_errors=True)
    issued = [t for op, p, t in reqs if p == "database/creds/bench"]
    renewals = [t for op, p, t in reqs if p in ("sys/leases/renew", "sys/renew")]
    return {"issued": len(issued), "renewals": len(renewals), "rss_mib": rss / 1024, "cpu_s": cpu}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=int, default=60, help="seconds measured per static run")
    ap.add_argument("--dynamic", type=int, default=150, help="seconds of the dynamic-credentials run")
    ap.add_argument("--sizes", default="10,100")
    ap.add_argument("--binary", default=default_binary(),
                    help="the agent to measure (default: the static musl build that the image ships, "
                         "from scripts/build-static.sh, else target/agent/sidekey-agent)")
    ap.add_argument("--only-sidekey", action="store_true", help="skip the OpenBao Agent runs")
    args = ap.parse_args()
    binary = args.binary
    if not os.path.exists(binary):
        sys.exit("build it first: scripts/build-static.sh (or cargo build --profile agent -p sidekey-agent)")
    kinds = ("sidekey",) if args.only_sidekey else ("sidekey", "openbao")
    workdir = tempfile.mkdtemp(prefix="sidekey-bench-")
    os.chmod(workdir, 0o755)  # the postgres user must reach its directory
    bao = Bao(workdir)
    pg = Postgres(workdir)
    try:
        bao.api("POST", "sys/policies/acl/bench", {"policy": """
path "secret/data/*" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["read"] }
path "database/creds/*" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
"""})
        token = bao.api("POST", "auth/token/create", {"policies": ["bench"], "ttl": "24h"})["auth"]["client_token"]
        token_file = os.path.join(workdir, "token")
        with open(token_file, "w") as f:
            f.write(token)
        sizes = [int(s) for s in args.sizes.split(",")]
        for i in range(max(sizes)):
            bao.api("POST", f"secret/data/bench/s{i}", {"data": {"value": f"value-{i}-" + "x" * 32}})
        bao.api("POST", "sys/mounts/database", {"type": "database"})
        bao.api("POST", "database/config/pg", {
            "plugin_name": "postgresql-database-plugin",
            "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=disable" % pg.port,
            "username": "postgres", "password": pg.password, "allowed_roles": "*"})
        bao.api("POST", "database/roles/bench", {
            "db_name": "pg", "default_ttl": 20, "max_ttl": 60,
            "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"]})

        rows = []
        for n in sizes:
            for refresh in ("5m", "10s"):
                for kind in kinds:
                    r = run_static(kind, binary, bao, token_file, n, refresh, args.window, workdir)
                    rows.append((kind, n, refresh, r))
                    print(f"# {kind} n={n} refresh={refresh}: {r}", file=sys.stderr, flush=True)
        dyn = {}
        for kind in kinds if args.dynamic > 0 else ():
            dyn[kind] = run_dynamic(kind, binary, bao, token_file, args.dynamic, workdir)
            print(f"# dynamic {kind}: {dyn[kind]}", file=sys.stderr, flush=True)
    finally:
        bao.stop()
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    if args.only_sidekey:
        for k, n, rf, r in rows:
            print(f"| sidekey n={n} refresh={rf} | ready {r['ready_ms']:.0f} ms ({r['ready_min']:.0f}–{r['ready_max']:.0f}) | RSS {r['rss_mib']:.1f} MiB (peak {r['peak_mib']:.1f}) "
                  f"| {r['req_per_min']:.0f} req/min ({r['reads_per_min']:.0f} reads) | {r['cpu_s_per_min']:.3f} CPU-s/min |")
        for k, r in dyn.items():
            print(f"| dynamic | {r} |")
        return
    size = lambda p: os.path.getsize(p) / 1e6
    bao_size = size(bao.bin)
    if shutil.which("strip"):
        stripped = os.path.join(tempfile.gettempdir(), "bao.stripped")
        if subprocess.run(["strip", "-o", stripped, bao.bin]).returncode == 0:
            bao_size = size(stripped)
            os.remove(stripped)
    print(f"| | sidekey-agent | OpenBao Agent |\n|---|---|---|")
    print(f"| binary (stripped) | {size(binary):.1f} MB | {bao_size:.1f} MB |")
    for n in sizes:
        for refresh in ("5m", "10s"):
            s = next(r for k, nn, rf, r in rows if k == "sidekey" and nn == n and rf == refresh)
            o = next(r for k, nn, rf, r in rows if k == "openbao" and nn == n and rf == refresh)
            label = f"{n} secrets, refresh {refresh}"
            print(f"| {label}: ready, median (min–max) | {s['ready_ms']:.0f} ms ({s['ready_min']:.0f}–{s['ready_max']:.0f}) "
                  f"| {o['ready_ms']:.0f} ms ({o['ready_min']:.0f}–{o['ready_max']:.0f}) |")
            print(f"| {label}: RSS (peak) | {s['rss_mib']:.1f} MiB ({s['peak_mib']:.1f}) | {o['rss_mib']:.1f} MiB ({o['peak_mib']:.1f}) |")
            print(f"| {label}: OpenBao requests/min (secret reads) | {s['req_per_min']:.0f} ({s['reads_per_min']:.0f}) | {o['req_per_min']:.0f} ({o['reads_per_min']:.0f}) |")
            print(f"| {label}: CPU-seconds/min | {s['cpu_s_per_min']:.3f} | {o['cpu_s_per_min']:.3f} |")
    s, o = dyn["sidekey"], dyn["openbao"]
    print(f"| dynamic PG creds, TTL 20 s / max 60 s, {args.dynamic} s: credentials issued | {s['issued']} | {o['issued']} |")
    print(f"| … lease renewals | {s['renewals']} | {o['renewals']} |")
    print(f"| … RSS, CPU-seconds | {s['rss_mib']:.1f} MiB, {s['cpu_s']:.2f} | {o['rss_mib']:.1f} MiB, {o['cpu_s']:.2f} |")


if __name__ == "__main__":
    main()
