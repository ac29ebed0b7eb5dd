# The example app (examples/pg-app): follows rotating database credentials
# from *_FILE files. Packs the static binary scripts/build-static.sh built;
# `make images` stages it in target/images/context (see agent.Dockerfile).
FROM scratch
COPY sidekey-example-app /sidekey-example-app
USER 65532:65532
ENTRYPOINT ["/sidekey-example-app"]
