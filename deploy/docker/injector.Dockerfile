# The injector: a static musl binary on scratch, non-root, no shell.
# Packs the binary scripts/build-static.sh built; `make images` stages it in
# target/images/context (see agent.Dockerfile):
#   docker build -f deploy/docker/injector.Dockerfile -t ghcr.io/sidekey/sidekey-injector:0.1.0 target/images/context
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY sidekey-injector /sidekey-injector
USER 65532:65532
# Freed pages go back at once (docs/performance.md, injector under hostile requests).
ENV MIMALLOC_PURGE_DELAY=0
EXPOSE 8443 9090
ENTRYPOINT ["/sidekey-injector"]
