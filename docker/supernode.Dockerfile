# SuperNode: one per data holder. It connects to the SuperLink and opens its ClientAppIo API on
# port 9094 for its own superexec-clientapp container, which runs the ClientApps.
ARG FLWR_VERSION=1.42.0
FROM flwr/supernode:${FLWR_VERSION}

ENV FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    FLWR_DISABLE_UPDATE_CHECK=1

ENTRYPOINT ["flower-supernode"]
