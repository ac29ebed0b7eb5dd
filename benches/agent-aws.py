#!/usr/bin/env python3
"""sidekey-agent with only the AWS backend against local moto: start-to-ready
time and RSS with N secrets (N = 10, 100), the time until a new version is
on disk with a 2 s refresh, and the Secrets Manager API calls one refresh
costs (counted by moto's request recorder over 6 refreshes of 5 s), scaled
to pod-hours at the default 5 min and priced at the list price
($0.05 per 10,000 API calls).

Usage: benches/agent-aws.py [BINARY]   (default: the static AWS-only build,
  target/x86_64-unknown-linux-musl/agent/sidekey-agent-aws, made by
  cargo build --locked --profile agent --target x86_64-unknown-linux-musl \
    -p sidekey-agent --no-default-features --features aws
  cp target/x86_64-unknown-linux-musl/agent/sidekey-agent{,-aws})
Needs `make testenv` (moto). Loopback only.
"""
import json, os, shutil, signal, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bench

PRICE_PER_CALL = 0.05 / 10_000
HOURS_PER_MONTH = 730


def sm(endpoint, action, body):
    req = urllib.request.Request(endpoint + "/", data=json.dumps(body).encode(), method="POST", headers={
        "X-Amz-Target": f"secretsmanager.{action}", "Content-Type": "application/x-amz-json-1.1",
        "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def recorded_calls(endpoint):
    """API calls moto recorded since the recording started, by action."""
    with urllib.request.urlopen(endpoint + "/moto-api/recorder/download-recording") as r:
        text = r.read().decode()
    calls = {}
    for line in text.splitlines():
        try:
            target = json.loads(line).get("headers", {}).get("X-Amz-Target", "")
        except ValueError:
            continue
        if target:
            action = target.rsplit(".", 1)[-1]
            calls[action] = calls.get(action, 0) + 1
    return calls


def recorder(endpoint, what):
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/recorder/{what}", method="POST", data=b""))


def calls_per_refresh(binary, env, endpoint, work, n, ticks=6, period=5):
    """API calls of `ticks` refreshes (after the start) with `n` secrets."""
    out = bench.secrets_dir(work)
    config = {"mountPath": out, "refresh": f"{period}s", "files": [
        {"name": f"s{i}", "ref": f"aws-sm:bench/s{i}#value", "mode": "0440"} for i in range(n)],
        "aws": {"region": "us-east-1", "endpoint": endpoint}}
    proc = subprocess.Popen([binary, "run"], env={**env, "SIDEKEY_CONFIG": json.dumps(config)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.wait_ready(proc, out, [f"s{i}" for i in range(n)])
    # From just after the start's reads to just before the (ticks+1)-th tick.
    recorder(endpoint, "reset-recording")
    recorder(endpoint, "start-recording")
    time.sleep(period * ticks + period * 0.3)
    recorder(endpoint, "stop-recording")
    calls = recorded_calls(endpoint)
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    shutil.rmtree(out, ignore_errors=True)
    return calls


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/x86_64-unknown-linux-musl/agent/sidekey-agent-aws")
    moto_bin = bench.env_tool("SIDEKEY_MOTO_SERVER")
    work = tempfile.mkdtemp(prefix="sidekey-aws-bench-")
    port = bench.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen([moto_bin, "-H", "127.0.0.1", "-p", str(port)], cwd=work,
                            env={**os.environ, "MOTO_RECORDER_FILEPATH": os.path.join(work, "recording.jsonl")},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except Exception:
                time.sleep(0.05)
        for i in range(100):
            sm(endpoint, "CreateSecret", {"Name": f"bench/s{i}", "SecretString": json.dumps({"value": f"v{i}" + "x" * 32})})
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_EC2_METADATA_DISABLED": "true", "SIDEKEY_LOG": "warn"}
        print("| secrets | ready | RSS | new version on disk (refresh 2 s) |\n|---|---|---|---|")
        for n in (10, 100):
            out = bench.secrets_dir(work)
            names = [f"s{i}" for i in range(n)]
            config = {"mountPath": out, "refresh": "2s", "files": [
                {"name": f"s{i}", "ref": f"aws-sm:bench/s{i}#value", "mode": "0440"} for i in range(n)],
                "aws": {"region": "us-east-1", "endpoint": endpoint}}
            proc = subprocess.Popen([binary, "run"], env={**env, "SIDEKEY_CONFIG": json.dumps(config)},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ready = bench.wait_ready(proc, out, names)
            time.sleep(3)
            rss, _, _ = bench.proc_stats(proc.pid)
            sm(endpoint, "PutSecretValue", {"SecretId": "bench/s0", "SecretString": json.dumps({"value": f"new-{n}"})})
            t0 = time.monotonic()
            while open(os.path.join(out, "s0")).read() != f"new-{n}":
                time.sleep(0.01)
                if time.monotonic() - t0 > 10:
                    sys.exit("no new version within 10 s")
            took = time.monotonic() - t0
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            shutil.rmtree(out, ignore_errors=True)
            print(f"| {n} | {ready * 1000:.0f} ms | {rss / 1024:.1f} MiB | {took:.2f} s |")
        print("\n| secrets per pod | API calls per refresh (moto) | per pod-hour at refresh 5 min "
              "| per 1,000 pods per month | at list price | one DescribeSecret per secret (before) |")
        print("|---|---|---|---|---|---|")
        for n in (10, 100):
            ticks = 6
            calls = calls_per_refresh(binary, env, endpoint, work, n, ticks=ticks)
            per_tick = sum(calls.values()) / ticks
            per_hour = per_tick * 12
            month = per_hour * HOURS_PER_MONTH * 1000
            before = n * 12 * HOURS_PER_MONTH * 1000
            print(f"| {n} | {per_tick:g} ({calls}) | {per_hour:g} | {month / 1e6:.2f} M | ${month * PRICE_PER_CALL:,.2f} "
                  f"| {before / 1e6:.1f} M calls, ${before * PRICE_PER_CALL:,.2f} |")
    finally:
        moto.terminate()
        moto.wait()


if __name__ == "__main__":
    main()
