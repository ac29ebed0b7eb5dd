# A static busybox on scratch: test pods that need a shell and coreutils.
FROM scratch
COPY busybox /bin/busybox
USER 65532:65532
ENTRYPOINT ["/bin/busybox"]
CMD ["sh"]
