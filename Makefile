# sidekey: `make demo` shows the main job on local defaults; `make test`
# installs what the tests need (cached) and runs every test.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CACHE ?= $(HOME)/.cache/sidekey
export SIDEKEY_CACHE := $(CACHE)
CARGO ?= cargo

.PHONY: all build test testenv lint fmt bench bench-fleet fuzz demo demo-cluster clean static images manifests

all: build

build:
	$(CARGO) build --workspace --locked

## testenv: install OpenBao, moto, kubernetes-validate, kube-apiserver, etcd into $(CACHE)
testenv:
	scripts/testenv.sh

## lint: formatting and clippy, warnings are errors; the core alone (no I/O) and the offline CLI
## build on their own
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) clippy -p sidekey --no-default-features --locked -- -D warnings
	$(CARGO) clippy -p sidekey --no-default-features --features cli --locked -- -D warnings

## test: provision the test environment, lint, build the static binaries, the images and their
## SBOMs (the real-node tests push, sign and attest them, then run them in pods), run every test
test: testenv lint
	scripts/build-images.sh --test
	scripts/sbom.sh
	source "$(CACHE)/env.sh" && $(CARGO) test --workspace --locked

## static: the musl binaries the images ship, with their sizes
static:
	scripts/build-static.sh

## images: the static binaries, then the agent, injector and example-app images from
## deploy/docker with docker, podman or buildah, saved in target/images/; PUSH_TO=host/prefix
## also pushes them (with skopeo) and prints their digests
images:
	scripts/build-images.sh

## manifests: regenerate deploy/manifests from the chart (a test checks they match)
manifests: testenv
	source "$(CACHE)/env.sh" && "$$SIDEKEY_HELM" template sidekey deploy/helm/sidekey --namespace sidekey > deploy/manifests/sidekey.yaml

## bench: criterion benchmarks (numbers in docs/performance.md)
bench:
	$(CARGO) bench --workspace --locked

## bench-fleet: 10…1000 agents started at once against one OpenBao (token, Kubernetes and JWT
## auth), OpenBao Agent beside them, steady state; numbers printed, plots and fleet.json in
## docs/img (benches/fleet.py; ~15 min)
PLOT_VENV := $(CACHE)/venv-plot-mpl3.10
bench-fleet: testenv static
	test -x "$(PLOT_VENV)/bin/python" || { python3 -m venv "$(PLOT_VENV)" && "$(PLOT_VENV)/bin/pip" install -q "matplotlib==3.10.*"; }
	$(CARGO) build --locked -p sidekey-testenv --bin kube-env
	source "$(CACHE)/env.sh" && "$(PLOT_VENV)/bin/python" benches/fleet.py --auth token,kubernetes,jwt --auth-sizes 100,1000

## fuzz: coverage-guided fuzzing of every parser on the stable toolchain, SECONDS_PER_TARGET (default
## 60) per target, new inputs in target/fuzz/corpus (`scripts/fuzz.sh merge T` keeps them);
## `make test` replays the committed corpora in fuzz/corpus
SECONDS_PER_TARGET ?= 60
fuzz:
	scripts/fuzz.sh build
	for t in $$(scripts/fuzz.sh list); do scripts/fuzz.sh run $$t $(SECONDS_PER_TARGET); done

## demo: the main job end to end on local defaults
demo:
	scripts/demo.sh

## demo-cluster: the same story in real pods on a single-node cluster, then torn down (root)
demo-cluster: testenv
	scripts/build-images.sh --test
	source "$(CACHE)/env.sh" && $(CARGO) run --locked -q -p sidekey-testenv --bin demo-cluster

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
