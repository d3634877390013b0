# nightwatch: the daemon, as a container. Build:  docker build -t nightwatch:0.1.0 .
# Run:    docker run -v $PWD/my.yaml:/etc/nightwatch/nightwatch.yaml:ro nightwatch:0.1.0
# The config comes from a mounted file (in Kubernetes: the ConfigMap of deploy/kubernetes/);
# secrets come from the environment through ${VAR} in that file.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Every runtime dependency ships manylinux wheels (psycopg[binary], PyMySQL, redis, kubernetes):
# no compiler is needed, and none ends up in the final image.
COPY pyproject.toml README.md ./
COPY nightwatch ./nightwatch
RUN pip install --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /install /usr/local
# A fixed numeric non-root user, so Kubernetes can check runAsNonRoot without a lookup.
RUN groupadd --system --gid 10001 nightwatch \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/nightwatch --create-home \
            --shell /usr/sbin/nologin nightwatch \
 && mkdir -p /etc/nightwatch
WORKDIR /var/lib/nightwatch
USER 10001:10001
# /healthz /readyz /metrics, when the config says server.listen: 0.0.0.0:9090
EXPOSE 9090
ENTRYPOINT ["nightwatch"]
CMD ["run", "--config", "/etc/nightwatch/nightwatch.yaml"]
