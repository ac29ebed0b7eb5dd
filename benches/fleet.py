#!/usr/bin/env python3
"""Fleet scale: N agents started at once against one OpenBao, measured.

For each N (default 10, 100, 300, 1000) a fresh OpenBao dev server with a
file audit device (every request is written to disk, as in production) and
N agent processes, each configured as the injector configures one (token
auth with its own token, 10 KV v2 secrets, optionally one dynamic
PostgreSQL credential), all spawned at once:

- herd: time until all N are ready (and per agent p50/p99/max from its own
  spawn), the server's CPU-seconds, peak requests per second, requests per
  agent, the server's open file descriptors (peak during the herd, and
  `--idle-after` seconds after it), the agents' total RSS and the memory the machine lost
  (MemAvailable before minus after);
- steady state (`--steady SECONDS`, at the largest N that ran): the server's
  request rate over time with `--refresh` (default 30 s) and the agents'
  total CPU over the window;
- the same herd with OpenBao Agent (`--openbao-agent 100,200`: token-file
  auto-auth, one template per file) at the sizes that fit in memory;
- with `--quota RATE`, the herds under an OpenBao rate-limit quota of RATE
  requests/s on the KV mount (429 with `Retry-After`): the answers 429 the
  quota gave (OpenBao's `quota.rate_limit.violation` counter) per agent;
- with `--auth token,kubernetes,jwt`, the sidekey herds of `--auth-sizes`
  (default 1000) again with pod identities: projected service-account
  tokens from a real kube-apiserver (`kube-env`, built from tests/support),
  Kubernetes auth (OpenBao asks the apiserver's TokenReview at every login)
  and JWT auth (OpenBao checks the signature itself).

Plots (PNG) go to `--plots` (default docs/img): ready time vs N, server
requests/s during the largest herd of each agent, agent memory vs N, and
the steady-state request rate. The numbers are printed as Markdown and
written to `<plots>/fleet.json`.

Usage: benches/fleet.py [--sizes 10,100,300,1000] [--secrets 10] [--dynamic]
         [--openbao-agent 100,200] [--steady 120] [--refresh 30s]
         [--auth token[,kubernetes,jwt]] [--auth-sizes 1000] [--quota RATE]
         [--binary PATH] [--plots DIR]
`make bench-fleet` provisions matplotlib and runs it. Needs `make testenv`
(bao, PostgreSQL) and the agent (`scripts/build-static.sh`). Only loopback
addresses are used.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime

from benchlib import (DB_SOURCE, Bao, Postgres, default_binary, kv_sources, proc_stats, secrets_dir,
                      start_bao_agent, start_sidekey)

POLICY = """
path "secret/data/*" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["read"] }
path "database/creds/*" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
"""


def mem_available_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def percentile(values, p):
    values = sorted(values)
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class Sampler(threading.Thread):
    """Samples the server's fds, CPU and RSS every 100 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.stop, self.samples = pid, threading.Event(), []

    def run(self):
        t0 = time.monotonic()
        while not self.stop.is_set():
            try:
                rss, _, cpu = proc_stats(self.pid)
            except OSError:
                break
            self.samples.append((time.monotonic() - t0, fd_count(self.pid), cpu, rss))
            time.sleep(0.1)


class KubeEnv:
    """A kube-apiserver with service-account tokens (tests/support's kube-env)."""

    def __init__(self, workdir, binary):
        self.proc = subprocess.Popen([binary, os.path.join(workdir, "sa-tokens"), "10"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line:
            sys.exit("kube-env did not start")
        self.info = json.loads(line)

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait()


def kube_env_binary():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for profile in ("release", "debug"):
        path = os.path.join(root, "target", profile, "kube-env")
        if os.path.exists(path):
            return path
    sys.exit("build it first: cargo build -p sidekey-testenv --bin kube-env")


def enable_auth(bao, auth, kube):
    """Kubernetes or JWT auth on `bao` for service account fleet/app."""
    info = kube.info
    bao.api("POST", f"sys/auth/{auth}", {"type": auth})
    if auth == "kubernetes":
        bao.api("POST", "auth/kubernetes/config", {
            "kubernetes_host": info["url"], "kubernetes_ca_cert": info["ca_pem"],
            "token_reviewer_jwt": info["admin_token"], "disable_local_ca_jwt": True})
        bao.api("POST", "auth/kubernetes/role/app", {
            "bound_service_account_names": ["app"], "bound_service_account_namespaces": ["fleet"],
            "audience": "sidekey", "token_policies": ["bench"], "token_ttl": "1h"})
    else:
        bao.api("POST", "auth/jwt/config", {"jwt_validation_pubkeys": [info["sa_public_key"]],
                                            "bound_issuer": info["issuer"]})
        bao.api("POST", "auth/jwt/role/app", {
            "role_type": "jwt", "bound_audiences": ["sidekey"], "user_claim": "sub",
            "bound_subject": "system:serviceaccount:fleet:app", "token_policies": ["bench"], "token_ttl": "1h"})


def quota_violations(bao):
    """The 429s OpenBao's rate-limit quotas have answered so far."""
    total = 0
    for line in bao.metrics_text().splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name.endswith("quota_rate_limit_violation") and not line.startswith("#"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def setup_server(workdir, n, secrets, pg, auth="token", kube=None, quota=0):
    bao = Bao(workdir)
    bao.api("POST", "sys/policies/acl/bench", {"policy": POLICY})
    if quota:
        bao.api("POST", "sys/quotas/config", {"enable_rate_limit_response_headers": True})
        bao.api("POST", "sys/quotas/rate-limit/kv", {"path": "secret/", "rate": quota, "interval": "1s"})
    for i in range(secrets):
        bao.api("POST", f"secret/data/bench/s{i}", {"data": {"value": f"value-{i}-" + "x" * 32}})
    if pg:
        bao.api("POST", "sys/mounts/database", {"type": "database"})
        bao.api("POST", "database/config/pg", {
            "plugin_name": "postgresql-database-plugin",
            "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=disable" % pg.port,
            "username": "postgres", "password": pg.password, "allowed_roles": "*",
            "max_open_connections": 8})
        bao.api("POST", "database/roles/bench", {
            "db_name": "pg", "default_ttl": 3600, "max_ttl": 7200,
            "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"]})
    if auth != "token":
        enable_auth(bao, auth, kube)
        # Every pod has its own projected token; ten distinct ones, reused,
        # cost the server the same (one TokenReview or signature check per login).
        sa_tokens = kube.info["tokens"]
        return bao, [{"method": auth, "mount": auth, "role": "app", "tokenPath": sa_tokens[i % len(sa_tokens)]}
                     for i in range(n)]
    tokens = []
    for i in range(n):
        token = bao.api("POST", "auth/token/create", {"policies": ["bench"], "ttl": "24h"})["auth"]["client_token"]
        path = os.path.join(workdir, f"token-{i}")
        with open(path, "w") as f:
            f.write(token)
        tokens.append({"method": "token", "tokenPath": path})
    return bao, tokens


def herd(kind, binary, n, args, workdir, pg, auth="token", kube=None):
    """One herd of `n` agents of `kind`; returns its numbers and what is
    still running (for a steady-state measurement, then `stop`)."""
    sources = kv_sources([f"s{i}" for i in range(args.secrets)]) + ([DB_SOURCE] if args.dynamic else [])
    names = [s[0] for s in sources]
    run_dir = tempfile.mkdtemp(dir=workdir, prefix=f"{kind}-{n}-")
    bao, logins = setup_server(run_dir, n, args.secrets, pg, auth, kube, args.quota)
    violations0 = quota_violations(bao) if args.quota else 0
    line0 = bao.audit_lines()
    outs = [secrets_dir(run_dir) for _ in range(n)]
    before = mem_available_kib()
    sampler = Sampler(bao.proc.pid)
    sampler.start()
    _, _, cpu0 = proc_stats(bao.proc.pid)
    procs, spawned = [], []
    t0 = time.monotonic()
    for i in range(n):
        spawned.append(time.monotonic() - t0)
        if kind == "sidekey":
            procs.append(start_sidekey(binary, bao.addr, None, outs[i], sources, args.refresh, auth=logins[i]))
        else:
            procs.append(start_bao_agent(bao, logins[i]["tokenPath"], outs[i], sources, args.refresh,
                                         tempfile.mkdtemp(dir=run_dir)))
    spawn_s = time.monotonic() - t0
    # Ready: every file of the agent exists and is not empty.
    ready = [None] * n
    waiting = list(range(n))
    deadline = t0 + args.timeout
    while waiting and time.monotonic() < deadline:
        still = []
        for i in waiting:
            # Cheap first: the last file; then all of them.
            if os.path.exists(os.path.join(outs[i], names[-1])) and all(
                    os.path.exists(p) and os.path.getsize(p) > 0 for p in (os.path.join(outs[i], x) for x in names)):
                ready[i] = time.monotonic() - t0
            elif procs[i].poll() is not None:
                sys.exit(f"{kind} agent {i} exited with {procs[i].returncode}")
            else:
                still.append(i)
        waiting = still
        time.sleep(0.05)
    if waiting:
        print(f"# {kind} n={n}: {len(waiting)} agents not ready in {args.timeout} s", file=sys.stderr)
    all_ready = max(r for r in ready if r is not None)
    _, _, cpu1 = proc_stats(bao.proc.pid)
    time.sleep(1)
    rss_kib = sum(proc_stats(p.pid)[0] for p in procs)
    used_kib = before - mem_available_kib()
    time.sleep(args.idle_after - 1)
    idle_fds = fd_count(bao.proc.pid)
    herd_samples = [s for s in sampler.samples if s[0] <= all_ready + 0.5]
    peak_fds = max(s[1] for s in herd_samples)
    server_rss = max(s[3] for s in herd_samples)
    base_fds = sampler.samples[0][1]
    reqs = bao.requests_since(line0)
    throttled = quota_violations(bao) - violations0 if args.quota else 0
    per_agent = [r - s for r, s in zip(ready, spawned) if r is not None]
    # Requests per second at the server, from the audit log's timestamps.
    stamps = sorted(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() for _, _, t in reqs if t)
    rate = Counter(int(s - stamps[0]) for s in stamps) if stamps else Counter()
    timeline = [rate.get(i, 0) for i in range(int(stamps[-1] - stamps[0]) + 1)] if stamps else []
    result = {
        "kind": kind, "n": n, "auth": auth, "secrets": args.secrets, "dynamic": args.dynamic,
        "quota": args.quota, "throttled_per_agent": throttled / n,
        "spawn_s": spawn_s, "all_ready_s": all_ready, "ready_after_spawn_p50_s": percentile(per_agent, 50),
        "ready_after_spawn_p99_s": percentile(per_agent, 99), "ready_after_spawn_max_s": max(per_agent),
        "not_ready": len(waiting), "server_cpu_s": cpu1 - cpu0, "requests": len(reqs),
        "requests_per_agent": len(reqs) / n, "peak_requests_per_s": max(timeline, default=0),
        "server_fds_base": base_fds, "server_fds_peak": peak_fds, "server_fds_idle": idle_fds,
        "server_fds_per_agent_peak": (peak_fds - base_fds) / n, "server_fds_per_agent_idle": (idle_fds - base_fds) / n,
        "server_rss_mib": server_rss / 1024, "agents_rss_mib": rss_kib / 1024, "memory_used_mib": used_kib / 1024,
        "request_timeline": timeline,
        "requests_by_path": dict(Counter("secret/data/…" if p.startswith("secret/data/") else p for _, p, _ in reqs)),
    }
    print(f"# {kind} n={n} auth={auth}: all ready {all_ready:.1f} s, {len(reqs) / n:.1f} req/agent, fds/agent peak "
          f"{result['server_fds_per_agent_peak']:.2f} idle {result['server_fds_per_agent_idle']:.2f}, "
          f"RSS {rss_kib / 1024:.0f} MiB, 429s/agent {throttled / n:.1f}; {result['requests_by_path']}",
          file=sys.stderr, flush=True)
    return result, (bao, procs, sampler, run_dir)


def steady(handle, window):
    """The server's request rate over `window` seconds with the agents running."""
    bao, procs, _, _ = handle
    line0 = bao.audit_lines()
    cpu0 = sum(proc_stats(p.pid)[2] for p in procs)
    _, _, scpu0 = proc_stats(bao.proc.pid)
    time.sleep(window)
    cpu1 = sum(proc_stats(p.pid)[2] for p in procs)
    _, _, scpu1 = proc_stats(bao.proc.pid)
    reqs = bao.requests_since(line0)
    stamps = sorted(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() for _, _, t in reqs if t)
    start = stamps[0] if stamps else 0
    rate = Counter(int(s - start) for s in stamps)
    timeline = [rate.get(i, 0) for i in range(window)]
    return {"window_s": window, "requests": len(reqs), "requests_per_s": len(reqs) / window,
            "agents_cpu_s": cpu1 - cpu0, "server_cpu_s": scpu1 - scpu0, "timeline": timeline,
            "paths": dict(Counter(p.split("/")[1] if p.startswith("secret/") else p for _, p, _ in reqs))}


def stop(handle):
    bao, procs, sampler, run_dir = handle
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except Exception:
            p.kill()
    sampler.stop.set()
    bao.stop()
    shutil.rmtree(run_dir, ignore_errors=True)
    for d in os.listdir("/dev/shm"):
        if d.startswith("sidekey-bench-out-"):
            shutil.rmtree(os.path.join("/dev/shm", d), ignore_errors=True)


def finish(plt, fig, ax, note, path, title, xlabel, ylabel):
    """Titles, grid, legend, the machine note, and the PNG at `path`."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, note, fontsize=6)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(results, steady_result, out_dir, machine):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    by_kind = {}
    for r in results:
        if r["auth"] == "token":
            by_kind.setdefault(r["kind"], []).append(r)
    other_auth = [r for r in results if r["auth"] != "token"]
    label = {"sidekey": "sidekey-agent", "openbao": "OpenBao Agent"}
    note = f"{machine}; one OpenBao with a file audit device, token auth, 10 KV v2 secrets per agent"

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for kind, rs in by_kind.items():
        ns = [r["n"] for r in rs]
        ax.plot(ns, [r["all_ready_s"] for r in rs], marker="o", label=f"{label[kind]}: all ready")
        ax.plot(ns, [r["ready_after_spawn_p50_s"] for r in rs], marker=".", linestyle="--", label=f"{label[kind]}: p50 per agent")
    for auth in sorted({r["auth"] for r in other_auth}):
        rs = [r for r in other_auth if r["auth"] == auth]
        ax.plot([r["n"] for r in rs], [r["all_ready_s"] for r in rs], marker="x" if auth == "kubernetes" else "+",
                markersize=9, linestyle=":", label=f"sidekey-agent, {auth} auth: all ready")
    ax.set_xscale("log")
    finish(plt, fig, ax, note, os.path.join(out_dir, "fleet-ready.png"), "Time to ready vs fleet size", "agents started at once", "seconds")

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for kind, rs in by_kind.items():
        r = max(rs, key=lambda r: r["n"])
        ax.plot(range(len(r["request_timeline"])), r["request_timeline"], label=f"{label[kind]}, {r['n']} agents")
    finish(plt, fig, ax, note, os.path.join(out_dir, "fleet-herd-requests.png"), "Server load during a simultaneous start", "seconds since the first request", "requests/s at the server")

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for kind, rs in by_kind.items():
        ns = [r["n"] for r in rs]
        ax.plot(ns, [r["agents_rss_mib"] for r in rs], marker="o", label=f"{label[kind]}: total RSS")
        ax.plot(ns, [r["memory_used_mib"] for r in rs], marker=".", linestyle="--", label=f"{label[kind]}: MemAvailable drop")
    ax.set_xscale("log")
    ax.set_yscale("log")
    finish(plt, fig, ax, note, os.path.join(out_dir, "fleet-memory.png"), "Agent memory vs fleet size", "agents", "MiB")

    if steady_result:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        t = steady_result["timeline"]
        ax.plot(range(len(t)), t)
        ax.axhline(steady_result["requests_per_s"], color="gray", linestyle=":", label="mean")
        ax.set_ylim(bottom=0)
        finish(plt, fig, ax, note, os.path.join(out_dir, "fleet-steady.png"), f"Steady state: {steady_result['n']} agents, refresh {steady_result['refresh']}", "seconds", "requests/s at the server")


def machine_line():
    cpus = os.cpu_count()
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 1024 / 1024
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return f"{cpus} cores ({model}), {mem:.0f} GiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,100,300,1000")
    ap.add_argument("--secrets", type=int, default=10)
    ap.add_argument("--dynamic", action="store_true", help="one dynamic PostgreSQL credential per agent too")
    ap.add_argument("--openbao-agent", default="100,200", help="OpenBao Agent sizes ('' for none)")
    ap.add_argument("--steady", type=int, default=120, help="seconds of steady state at the largest size (0: none)")
    ap.add_argument("--refresh", default="30s")
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--idle-after", type=int, default=15, help="seconds after the herd when idle fds are counted")
    ap.add_argument("--quota", type=int, default=0, help="an OpenBao rate-limit quota (requests/s) on the KV mount")
    ap.add_argument("--auth", default="token", help="token, kubernetes, jwt (comma-separated)")
    ap.add_argument("--auth-sizes", default="1000", help="sizes of the kubernetes and jwt herds")
    ap.add_argument("--binary", default=default_binary())
    ap.add_argument("--replot", metavar="FLEET_JSON", help="only redraw the plots of an earlier run")
    ap.add_argument("--plots", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs/img"))
    args = ap.parse_args()
    if args.replot:
        with open(args.replot) as f:
            earlier = json.load(f)
        plot(earlier["herds"], earlier["steady"], args.plots, earlier["machine"])
        return
    if not os.path.exists(args.binary):
        sys.exit("build it first: scripts/build-static.sh")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = tempfile.mkdtemp(prefix="sidekey-fleet-")
    os.chmod(workdir, 0o755)
    pg = Postgres(workdir) if args.dynamic else None
    results, steady_result = [], None
    sizes = [int(s) for s in args.sizes.split(",") if s]
    try:
        for n in sizes:
            r, handle = herd("sidekey", args.binary, n, args, workdir, pg)
            results.append(r)
            if n == max(sizes) and args.steady:
                steady_result = steady(handle, args.steady)
                steady_result.update({"n": n, "refresh": args.refresh})
                print(f"# steady n={n}: {steady_result['requests_per_s']:.1f} req/s, agents "
                      f"{steady_result['agents_cpu_s']:.1f} CPU-s in {args.steady} s", file=sys.stderr, flush=True)
            stop(handle)
        for n in [int(s) for s in args.openbao_agent.split(",") if s]:
            r, handle = herd("openbao", args.binary, n, args, workdir, pg)
            results.append(r)
            stop(handle)
        methods = [a for a in args.auth.split(",") if a and a != "token"]
        if methods:
            kube = KubeEnv(workdir, kube_env_binary())
            try:
                for auth in methods:
                    for n in [int(s) for s in args.auth_sizes.split(",") if s]:
                        r, handle = herd("sidekey", args.binary, n, args, workdir, pg, auth, kube)
                        results.append(r)
                        stop(handle)
            finally:
                kube.stop()
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    machine = machine_line()
    os.makedirs(args.plots, exist_ok=True)
    with open(os.path.join(args.plots, "fleet.json"), "w") as f:
        json.dump({"machine": machine, "date": time.strftime("%Y-%m-%d"), "herds": results, "steady": steady_result},
                  f, indent=1)
    plot(results, steady_result, args.plots, machine)
    print(f"Machine: {machine}\n")
    print("| agents | all ready | per agent p50 / p99 / max | server CPU | peak req/s | requests per agent "
          "| server fds per agent (peak / idle) | agents' RSS | MemAvailable drop |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        name = "sidekey" if r["kind"] == "sidekey" else "OpenBao Agent"
        if r["auth"] != "token":
            name += f" ({r['auth']} auth)"
        if r.get("quota"):
            name += f" (quota {r['quota']}/s: {r['throttled_per_agent']:.1f} answers 429 per agent)"
        print(f"| {name} {r['n']} | {r['all_ready_s']:.1f} s | {r['ready_after_spawn_p50_s']:.1f} / "
              f"{r['ready_after_spawn_p99_s']:.1f} / {r['ready_after_spawn_max_s']:.1f} s | {r['server_cpu_s']:.1f} s "
              f"| {r['peak_requests_per_s']} | {r['requests_per_agent']:.1f} | {r['server_fds_per_agent_peak']:.2f} / "
              f"{r['server_fds_per_agent_idle']:.2f} | {r['agents_rss_mib']:.0f} MiB | {r['memory_used_mib']:.0f} MiB |")
    if steady_result:
        s = steady_result
        print(f"\nSteady state, {s['n']} agents, refresh {s['refresh']}: {s['requests_per_s']:.1f} requests/s "
              f"({s['paths']}), agents {s['agents_cpu_s']:.1f} CPU-s and server {s['server_cpu_s']:.1f} CPU-s "
              f"in {s['window_s']} s")


if __name__ == "__main__":
    main()
