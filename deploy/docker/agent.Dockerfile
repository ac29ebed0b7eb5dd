# The agent: a static musl binary on scratch, non-root, no shell.
#
# The binary is built on the host (scripts/build-static.sh, the same cargo
# command CI runs) and this file only packs it, so any builder works without
# a registry: `make images` stages the binaries and the CA bundle in
# target/images/context and builds this file with docker, podman or buildah:
#   docker build -f deploy/docker/agent.Dockerfile -t ghcr.io/sidekey/sidekey-agent:0.1.0 target/images/context
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY sidekey-agent /sidekey-agent
USER 65532:65532
ENTRYPOINT ["/sidekey-agent"]
CMD ["run"]
