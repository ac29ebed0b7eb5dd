"""What the agent benchmarks share: a local OpenBao dev server with a file
audit device, PostgreSQL, process statistics, and starting sidekey-agent or
OpenBao Agent on the same files. Only loopback addresses are used."""

import json
import os
import pwd
import subprocess
import sys
import tempfile
import time
import urllib.request
import socket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("SIDEKEY_CACHE", os.path.expanduser("~/.cache/sidekey"))


def env_tool(name):
    if os.environ.get(name):
        return os.environ[name]
    with open(os.path.join(CACHE, "env.sh")) as f:
        for line in f:
            if line.startswith(f"export {name}="):
                return line.split("=", 1)[1].strip().strip('"')
    sys.exit(f"{name} not found: run `make testenv`")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Bao:
    def __init__(self, workdir):
        self.bin = env_tool("SIDEKEY_BAO")
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.token = "root-bench"
        self.audit = os.path.join(workdir, "audit.log")
        cfg = os.path.join(workdir, "server.hcl")
        with open(cfg, "w") as f:
            f.write(f'audit "file" "file" {{\n  options {{\n    file_path = "{self.audit}"\n  }}\n}}\n')
            # Cumulative counters at sys/metrics?format=prometheus (rate-limit violations).
            f.write('telemetry {\n  prometheus_retention_time = "1h"\n  disable_hostname = true\n}\n')
        self.proc = subprocess.Popen(
            [self.bin, "server", "-dev", "-dev-no-store-token", "-log-level=error",
             f"-dev-root-token-id={self.token}", f"-dev-listen-address=127.0.0.1:{self.port}", f"-config={cfg}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HOME": workdir})
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=1)
                return
            except Exception:
                time.sleep(0.05)
        sys.exit("OpenBao did not start")

    def metrics_text(self):
        """The server's metrics in the Prometheus text format."""
        req = urllib.request.Request(f"{self.addr}/v1/sys/metrics?format=prometheus", headers={"X-Vault-Token": self.token})
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read().decode()

    def api(self, method, path, body=None):
        req = urllib.request.Request(f"{self.addr}/v1/{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"X-Vault-Token": self.token})
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
            return json.loads(text) if text else None

    def audit_lines(self):
        try:
            with open(self.audit) as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    def requests_since(self, start_line):
        out = []
        with open(self.audit) as f:
            for i, line in enumerate(f):
                if i < start_line:
                    continue
                e = json.loads(line)
                if e.get("type") == "request":
                    out.append((e["request"].get("operation"), e["request"].get("path"), e.get("time")))
        return out

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Postgres:
    def __init__(self, workdir):
        pgbin = env_tool("SIDEKEY_PG_BIN")
        self.port = free_port()
        self.password = "bench-pg-password"
        d = os.path.join(workdir, "pg")
        os.makedirs(d)
        pw = os.path.join(d, "pw")
        with open(pw, "w") as f:
            f.write(self.password)
        user = None
        if os.getuid() == 0:
            user = pwd.getpwnam("postgres")
            for p in (d, pw):
                os.chown(p, user.pw_uid, user.pw_gid)

        def drop():
            if user:
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

        subprocess.run([f"{pgbin}/initdb", "-D", f"{d}/data", "-U", "postgres", "--auth-local=trust",
                        "--auth-host=scram-sha-256", f"--pwfile={pw}", "--no-sync"],
                       check=True, preexec_fn=drop, stdout=subprocess.DEVNULL)
        self.proc = subprocess.Popen([f"{pgbin}/postgres", "-D", f"{d}/data", "-p", str(self.port), "-h", "127.0.0.1",
                                      "-k", d, "-c", "fsync=off"], preexec_fn=drop,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            r = subprocess.run([f"{pgbin}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", "select 1"],
                               env={**os.environ, "PGPASSWORD": self.password}, capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        sys.exit("PostgreSQL did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def proc_stats(pid):
    """(RSS KiB, peak RSS KiB, CPU seconds) of a process."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return rss, hwm, cpu


def kv_sources(names):
    """Files from KV v2 secrets `secret/data/bench/<name>`, field `value`."""
    return [(n, f"secret/data/bench/{n}", "value") for n in names]


# A file of a dynamic PostgreSQL credential (role `bench` of `database/`).
DB_SOURCE = ("db", "database/creds/bench", "password")


def start_sidekey(binary, addr, token_file, out, sources, refresh, auth=None):
    """sidekey-agent writing `sources` ((file, Vault path, field) triples) to
    `out`; token auth with `token_file` unless `auth` (the agent config's
    `vault.auth`) says otherwise."""
    files = [{"name": n, "ref": f"vault:{path}#{field}", "mode": "0440"} for n, path, field in sources]
    config = {"mountPath": out, "refresh": refresh, "startupTimeout": "600s", "files": files,
              "vault": {"addr": addr, "auth": auth or {"method": "token", "tokenPath": token_file}}}
    return subprocess.Popen([binary, "run"], env={**os.environ, "SIDEKEY_CONFIG": json.dumps(config), "SIDEKEY_LOG": "warn"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_bao_agent(bao, token_file, out, sources, refresh, workdir):
    """OpenBao Agent rendering the same files, one template each."""
    cfg = os.path.join(workdir, "agent.hcl")
    with open(cfg, "w") as f:
        f.write(f'vault {{\n  address = "{bao.addr}"\n}}\n')
        f.write(f'auto_auth {{\n  method "token_file" {{\n    config = {{\n      token_file_path = "{token_file}"\n    }}\n  }}\n}}\n')
        if refresh != "5m":
            f.write(f'template_config {{\n  static_secret_render_interval = "{refresh}"\n}}\n')
        for n, path, field in sources:
            data = f".Data.data.{field}" if path.startswith("secret/data/") else f".Data.{field}"
            contents = '{{ with secret "%s" }}{{ %s }}{{ end }}' % (path, data)
            f.write(f'template {{\n  contents = {json.dumps(contents)}\n  destination = "{out}/{n}"\n}}\n')
    return subprocess.Popen([bao.bin, "agent", f"-config={cfg}", "-log-level=error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HOME": workdir})


def wait_ready(proc, out, names, timeout=60):
    start = time.monotonic()
    remaining = [os.path.join(out, n) for n in names]
    while time.monotonic() - start < timeout:
        # Keep the poll cheap (it shares the two cores with the agent and the
        # server): one stat while the first missing file is still missing,
        # then only what is still missing.
        if not os.path.exists(remaining[0]):
            if proc.poll() is not None:
                sys.exit(f"agent exited with {proc.returncode}")
            time.sleep(0.0005)
            continue
        remaining = [p for p in remaining if not (os.path.exists(p) and os.path.getsize(p) > 0)]
        if not remaining:
            return time.monotonic() - start
        if proc.poll() is not None:
            sys.exit(f"agent exited with {proc.returncode}")
        time.sleep(0.0005)
    sys.exit("agent not ready in time")


def secrets_dir(workdir):
    """Where an agent writes its files: tmpfs, as in a pod (sidekey's volume is
    an in-memory emptyDir), when the machine has /dev/shm; the disk otherwise.
    On this machine's ext4 the same 100-file write takes ~25 ms instead of ~2."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else workdir
    return tempfile.mkdtemp(dir=base, prefix="sidekey-bench-out-")


def default_binary():
    static = os.path.join(ROOT, "target/x86_64-unknown-linux-musl/agent/sidekey-agent")
    return static if os.path.exists(static) else os.path.join(ROOT, "target/agent/sidekey-agent")
