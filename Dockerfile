# syntax=docker/dockerfile:1
# One Dockerfile, two images:
#   train  the whole `cyclegan` CLI (prepare/train/evaluate/export/register/pipeline) with
#          PyTorch's CUDA build; what every Kubeflow task runs (pipeline parameter `image`)
#   serve  `cyclegan serve` / `translate` with ONNX Runtime (CUDA provider), no torch
# Both install exactly the pins of docker/requirements-*.txt (written by docker/lock.py from
# pyproject.toml), run as an unprivileged user and use `cyclegan` as the entrypoint.
#   docker build --target train -t REGISTRY/cyclegan:train .
#   docker build --target serve -t REGISTRY/cyclegan:serve .
# CUDA comes from the NVIDIA runtime wheels the pins include; the host's NVIDIA container
# toolkit provides the driver, so a plain Python base image serves GPU nodes.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# -- a venv that the final stages copy whole -------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

FROM base AS train-deps
# Build-time only: docker/build.sh points it at the build machine's pip settings (index, CA
# bundle) mounted for the build; unset, pip uses its defaults. Never part of an image.
ARG PIP_CONFIG_FILE
COPY docker/requirements-train.txt /tmp/requirements.txt
# --no-deps: the file is the full closure; `pip check` fails the build if it ever is not.
RUN pip install --no-deps -r /tmp/requirements.txt && pip check

FROM base AS serve-deps
ARG PIP_CONFIG_FILE
COPY docker/requirements-serve.txt /tmp/requirements.txt
RUN pip install --no-deps -r /tmp/requirements.txt && pip check

# -- the project itself (no dependencies: they are pinned above) -----------------------------
FROM base AS project
# the build backend (setuptools) comes from the index too
ARG PIP_CONFIG_FILE
WORKDIR /src
COPY pyproject.toml README.md ./
COPY training ./training
COPY serving ./serving
COPY components ./components
COPY pipeline ./pipeline
RUN pip wheel --no-deps --wheel-dir /wheels .

# -- train: the full CLI with CUDA PyTorch ----------------------------------------------------
# Order is cache order: what changes least comes first (the user, then the multi-GB venv);
# the project's code and the commit, which change with every build, come after it, so a new
# commit rebuilds only the small layers from the project's install on.
FROM base AS train
ENV MPLCONFIGDIR=/tmp/matplotlib
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin cyclegan \
    && mkdir -p /work && chown cyclegan:cyclegan /work
COPY --from=train-deps /opt/venv /opt/venv
COPY --from=project /wheels /wheels
# The lineage arguments come before a RUN: a changed build argument reruns the first RUN after
# it, and everything after, whereas an ENV that only copies one is taken from the cache with
# the old value by buildah (containers/buildah#5501), which would bake in an old commit.
ARG GIT_COMMIT=unknown
ARG IMAGE_REF=""
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels
WORKDIR /work
COPY --chown=cyclegan:cyclegan params.yaml dvc.yaml ./
COPY --chown=cyclegan:cyclegan profiles ./profiles
# Lineage inside the image: the commit it was built from, and the name it was pushed as.
ENV CYCLEGAN_GIT_COMMIT=${GIT_COMMIT} \
    CYCLEGAN_IMAGE=${IMAGE_REF}
USER 10001
ENTRYPOINT ["cyclegan"]
CMD ["--help"]

# -- serve: ONNX Runtime server, no torch -----------------------------------------------------
FROM base AS serve
ENV LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cu13/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin cyclegan \
    && mkdir -p /models && chown cyclegan:cyclegan /models   # for a mounted export folder
COPY --from=serve-deps /opt/venv /opt/venv
COPY --from=project /wheels /wheels
ARG GIT_COMMIT=unknown
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels
WORKDIR /home/cyclegan
COPY --chown=cyclegan:cyclegan params.yaml ./
ENV CYCLEGAN_GIT_COMMIT=${GIT_COMMIT}
USER 10001
EXPOSE 8080
ENTRYPOINT ["cyclegan"]
# The champion from the MLflow registry (set MLFLOW_TRACKING_URI); serving/k8s/ passes its own args.
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--model", "models:/cyclegan@champion"]
