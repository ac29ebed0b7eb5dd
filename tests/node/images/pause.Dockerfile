# The pod sandbox image of the test node (containerd's sandbox_image).
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
