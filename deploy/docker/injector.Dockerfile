# syntax=docker/dockerfile:1
# The injector: a static musl binary on scratch, non-root, no shell.
# Build from the repository root:
#   docker build -f deploy/docker/injector.Dockerfile -t sidekey-injector .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --locked --release --target x86_64-unknown-linux-musl -p sidekey-injector \
 && cp target/x86_64-unknown-linux-musl/release/sidekey-injector /sidekey-injector

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /sidekey-injector /sidekey-injector
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/sidekey-injector"]
