# syntax=docker/dockerfile:1
# The agent: a static musl binary on scratch, non-root, no shell.
# Build from the repository root:
#   docker build -f deploy/docker/agent.Dockerfile -t sidekey-agent .
# Pin the base images by digest in your own build (docs/supply-chain.md).
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --locked --profile agent --target x86_64-unknown-linux-musl -p sidekey-agent \
 && cp target/x86_64-unknown-linux-musl/agent/sidekey-agent /sidekey-agent

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /sidekey-agent /sidekey-agent
USER 65532:65532
ENTRYPOINT ["/sidekey-agent"]
CMD ["run"]
