#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into fuzz/corpus/<target>/ from the
example workloads (../shared/corpus, examples/): AdmissionReviews of their
pods, their annotations, references, the agent configs `sidekey inject`
writes for them, and the manifests themselves for the YAML reader and
migrate. Run once when the corpora are created; scripts/fuzz.sh grows them.

usage: fuzz/seed.py SIDEKEY_BINARY  (needs PyYAML)"""
import glob, hashlib, json, os, subprocess, sys
import yaml

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sidekey = sys.argv[1]
files = sorted(glob.glob(os.path.join(root, "..", "shared", "corpus", "*", "*.yaml"))
               + glob.glob(os.path.join(root, "examples", "**", "*.yaml"), recursive=True))

def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(root, "fuzz", "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)

def pods(doc):
    if not isinstance(doc, dict):
        return
    if doc.get("kind") == "List":
        for i in doc.get("items") or []:
            yield from pods(i)
    elif doc.get("kind") == "Pod":
        yield doc
    else:
        spec = doc.get("spec") or {}
        t = spec.get("template") or (spec.get("jobTemplate") or {}).get("spec", {}).get("template")
        if isinstance(t, dict):
            yield {"apiVersion": "v1", "kind": "Pod", **t}

def review(pod, op="CREATE", kind="Pod"):
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                                   "kind": {"group": "", "version": "v1", "kind": kind},
                                   "resource": {"group": "", "version": "v1", "resource": "pods"},
                                   "namespace": "shop", "operation": op, "object": pod}})

for path in files:
    text = open(path, encoding="utf-8").read()
    put("yaml", text)
    for b in range(4):
        put("migrate", bytes([b]) + text.encode())
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        continue
    for doc in docs:
        for pod in pods(doc):
            put("admission", review(pod))
            ann = (pod.get("metadata") or {}).get("annotations") or {}
            put("annotations", "".join(f"{k}={v}\n" for k, v in ann.items()))
            for v in ann.values():
                if isinstance(v, str) and ":" in v:
                    put("reference", v)
    out = subprocess.run([sidekey, "inject", "-q", "-o", "json", "-f", path], capture_output=True, text=True)
    if out.returncode == 0:
        doc = json.loads(out.stdout)
        objs = doc["items"] if doc.get("kind") == "List" else [doc]
        for o in objs:
            for pod in pods(o):
                for c in (pod.get("spec") or {}).get("initContainers", []) + (pod.get("spec") or {}).get("containers", []):
                    for e in c.get("env") or []:
                        if e.get("name") == "SIDEKEY_CONFIG":
                            put("agent_config", e["value"])

for op, kind in [("UPDATE", "Pod"), ("CREATE", "Deployment"), ("DELETE", "Pod")]:
    put("admission", review({"metadata": {"name": "x"}}, op, kind))
put("admission", '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"}}')
for r in ["vault:secret/data/shop/db#password", "vault:database/creds/orders", "aws-sm:prod/db",
          "aws-sm:arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf#password",
          "vault:kv/app?version=3#key", "aws-sm:prod/db?version-stage=AWSPREVIOUS#password",
          "aws-sm:prod/db?version-id=01234567-89ab-cdef-0123-456789abcdef", "vault:secret/data/a%2Fb#k"]:
    put("reference", r)
for y in ["a: &x {b: [1, 2.5, true, null, ~]}\nc: *x\n", "--- |\n  block\n--- >-\n  folded\n...\n",
          "k: 'it''s'\r\nl: \"\\u00e9\\t\"\r\n", "? [complex]\n: key\n", "- !!str 123\n- 0x1F\n- 1e3\n- .inf\n",
          "%YAML 1.2\n---\n{a: 1, a: 2}\n"]:
    put("yaml", y)
