# The example app image with a static busybox beside it, so tests can look
# inside the app container (mounts, file modes) with `kubectl exec`.
ARG BASE
FROM ${BASE}
COPY busybox /bin/busybox
