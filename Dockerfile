# nightwatch: the daemon, as a container. Build:  scripts/build-image.sh  (or: docker build -t nightwatch:0.1.0 .)
# Run:    docker run -v $PWD/my.yaml:/etc/nightwatch/nightwatch.yaml:ro nightwatch:0.1.0
# The config comes from a mounted file (in Kubernetes: the ConfigMap of deploy/kubernetes/);
# secrets come from the environment through ${VAR} in that file.
#
# BASE_IMAGE is any image with python3 (3.11) and its venv module: the official slim image by
# default; scripts/build-image.sh --base local passes a Debian base made with mmdebstrap.
ARG BASE_IMAGE=python:3.11-slim

# The dependencies, in a stage of their own that depends only on the lock file and the
# wheelhouse: a code change does not reinstall them. With wheels in ./wheelhouse/ (made by
# scripts/build-image.sh) the install needs no network; without, the same pins come from PyPI.
FROM ${BASE_IMAGE} AS deps
COPY requirements.lock wheelhouse* /deps/
RUN python3 -m venv /opt/nightwatch \
 && if ls /deps/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /deps; fi \
 && /opt/nightwatch/bin/pip install --quiet --no-cache-dir --disable-pip-version-check "$@" \
        --requirement /deps/requirements.lock

FROM ${BASE_IMAGE}
ENV PATH=/opt/nightwatch/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# A fixed numeric non-root user, so Kubernetes can check runAsNonRoot without a lookup.
RUN groupadd --system --gid 10001 nightwatch \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/nightwatch --create-home \
            --shell /usr/sbin/nologin nightwatch \
 && mkdir -p /etc/nightwatch
COPY --from=deps /opt/nightwatch /opt/nightwatch
# nightwatch itself: a small layer on top, built with the pinned setuptools already installed.
COPY pyproject.toml README.md LICENSE /src/
COPY nightwatch /src/nightwatch
RUN pip install --quiet --no-cache-dir --disable-pip-version-check --no-index --no-deps \
        --no-build-isolation /src \
 && rm -rf /src
# The state of the embedded default (SQLite file, lock file, local jobs) lives here: mount a
# volume, so a read-only root file system works.
VOLUME /var/lib/nightwatch
WORKDIR /var/lib/nightwatch
USER 10001:10001
# /healthz /readyz /metrics, when the config says server.listen: 0.0.0.0:9090
EXPOSE 9090
# For Docker and compose (Kubernetes uses the Deployment's probes instead). Set
# NIGHTWATCH_HEALTHZ_URL when server.listen is not on port 9090.
ENV NIGHTWATCH_HEALTHZ_URL=http://127.0.0.1:9090/healthz
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['NIGHTWATCH_HEALTHZ_URL'], timeout=4)"]
ENTRYPOINT ["nightwatch"]
CMD ["run", "--config", "/etc/nightwatch/nightwatch.yaml"]

# Labels last, so a new revision does not invalidate any layer above.
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="nightwatch" \
      org.opencontainers.image.description="Keeps a relational task table and Kubernetes Jobs in step, with one leader among replicas" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
