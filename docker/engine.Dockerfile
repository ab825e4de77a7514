# The engines' image: entrypoint `dth`, as the plugin stacks' task definitions expect (cfn/*.yaml give only
# the Command: [s3, finder], [s3, worker], [image, sync-env]). skopeo copies images for the image engine.
# Build from the repository's root:
#     docker build -f docker/engine.Dockerfile -t dth-engine:0.1.0 .
# Dependencies come only from docker/requirements.lock (pinned, hash-checked).

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
RUN /opt/dth/bin/pip install --no-deps --no-build-isolation /src \
    && /opt/dth/bin/pip check \
    && /opt/dth/bin/dth --version

FROM ${PYTHON_IMAGE}
# skopeo from Debian (with containers-common: /etc/containers/policy.json and registries.conf).
RUN apt-get update \
    && apt-get install -y --no-install-recommends skopeo ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && skopeo --version
RUN groupadd --gid 10001 dth \
    && useradd --uid 10001 --gid dth --home-dir /home/dth --create-home --shell /usr/sbin/nologin dth
COPY --from=build /opt/dth /opt/dth
# The task definitions mount a volume at /tmp and make the root filesystem read-only: skopeo's blobs
# (default /var/tmp) and every temporary file go to /tmp.
ENV PATH=/opt/dth/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    DTH_STATE_DIR=/tmp/dth-state
USER 10001:10001
WORKDIR /home/dth
ENTRYPOINT ["dth"]
CMD ["--help"]
