# SuperExec: runs the app's code. One container beside the SuperLink runs the ServerApps (text
# targets, generator training); one per SuperNode runs that node's ClientApps (adapter training).
# The code arrives with each run (the FAB built by `flwr run`); its dependencies must already be
# installed here, because runtime dependency installation is disabled.
ARG FLWR_VERSION=1.42.0
FROM flwr/superexec:${FLWR_VERSION}

# CPU wheels by default; compose.gpu.yml passes a CUDA index (.../whl/cu126).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    HF_HUB_OFFLINE=1

# Mount points of the volumes: node cache and state, run outputs, the server's text-target cache
# (data.cache_dir "outputs/cache" relative to WORKDIR). A fresh named volume takes the owner of
# the folder it is mounted on: the image's non-root user app (uid 49999).
USER root
RUN mkdir -p /cache /state /outputs /app/outputs/cache \
    && chown app:app /cache /state /outputs /app/outputs /app/outputs/cache
USER app
WORKDIR /app

# torch first, from TORCH_INDEX_URL, so that installing the project finds it satisfied instead of
# pulling the default wheel from PyPI: the version of requirements/lock.txt (the tested one).
ARG TORCH_VERSION=2.13.0
RUN python -m pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# The project and its other dependencies, at the versions of requirements/lock.txt. flwr is
# already in the image: its line is removed from pyproject.toml, and flwr and torch from the lock.
COPY --chown=app:app pyproject.toml README.md /app/project/
COPY --chown=app:app requirements/lock.txt requirements/no-deps.txt /app/project/requirements/
COPY --chown=app:app feda2v_flwr /app/project/feda2v_flwr
COPY --chown=app:app strategies /app/project/strategies
RUN sed -i '/"flwr\[simulation\]/d' /app/project/pyproject.toml \
    && grep -v -E '^(flwr|torch)==' /app/project/requirements/lock.txt > /tmp/constraints.txt \
    && python -m pip install --no-cache-dir --constraint /tmp/constraints.txt /app/project \
    && python -m pip install --no-cache-dir --no-deps -r /app/project/requirements/no-deps.txt

ENTRYPOINT ["flower-superexec"]
