# SuperLink: the coordinator. It serves the Fleet, Control and Runtime (ServerAppIo) APIs on one
# port (9091). With --isolation process it runs no app code: superexec-serverapp does.
ARG FLWR_VERSION=1.42.0
FROM flwr/superlink:${FLWR_VERSION}

ENV FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    FLWR_DISABLE_UPDATE_CHECK=1

# /state receives state.db with compose.state.yml or compose.tls-state.yml. A fresh named volume
# takes the owner of the folder it is mounted on: here the image's non-root user app (uid 49999).
USER root
RUN mkdir -p /state && chown app:app /state
USER app

ENTRYPOINT ["flower-superlink"]
