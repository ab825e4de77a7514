# The operator's image: `python -m dth_operator` (run by the Helm chart's Deployment, which adds its flags).
# Build from the repository's root:
#     docker build -f docker/operator.Dockerfile -t dth-operator:0.1.0 .
# Dependencies come only from docker/requirements.lock (pinned, hash-checked); the project itself is
# installed without resolving anything. The plugin templates are copied to /app/cfn and named by
# DTH_S3_TEMPLATE and DTH_IMAGE_TEMPLATE.

# python:3.11.15-slim-bookworm (Debian 12), pinned by the digest of its multi-platform index.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/dth
COPY docker/requirements.lock /tmp/requirements.lock
RUN /opt/dth/bin/pip install --no-deps --require-hashes -r /tmp/requirements.lock
COPY pyproject.toml README.md /src/
COPY engines /src/engines
COPY operator /src/operator
# setuptools and wheel come from the lock too: no build isolation, nothing fetched unpinned.
RUN /opt/dth/bin/pip install --no-deps --no-build-isolation /src \
    && /opt/dth/bin/pip check \
    && /opt/dth/bin/python -c "import dth_operator.handlers"

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 dth \
    && useradd --uid 10001 --gid dth --home-dir /home/dth --create-home --shell /usr/sbin/nologin dth
COPY --from=build /opt/dth /opt/dth
COPY cfn/s3-plugin.yaml cfn/image-plugin.yaml /app/cfn/
ENV PATH=/opt/dth/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DTH_S3_TEMPLATE=/app/cfn/s3-plugin.yaml \
    DTH_IMAGE_TEMPLATE=/app/cfn/image-plugin.yaml
# Runs with a read-only root filesystem: /tmp is the only place it writes (an emptyDir in the chart).
USER 10001:10001
WORKDIR /home/dth
# 8080: Prometheus metrics (DTH_METRICS_PORT); 8081: kopf's liveness endpoint (/healthz).
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "dth_operator"]
