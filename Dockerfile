# syntax=docker/dockerfile:1
# media-poller container image: multi-stage, non-root, health-checked.
#   docker build -t media-poller .
#   docker run --env-file poller.env media-poller            # runs `main.py run`
# BASE_IMAGE can point at a locally imported base when no registry is reachable. Pin it by
# digest in your registry (python:3.11-slim-bookworm@sha256:…) for reproducible builds; the
# tag is kept here because the digest cannot be resolved where this file is maintained.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# Offline builds install from a wheelhouse instead of PyPI (docs/operations.md):
#   --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=http://127.0.0.1:8080/
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY poller ./poller
COPY providers ./providers
COPY storage ./storage
COPY main.py alembic.ini ./
COPY migrations ./migrations
# Bytecode is compiled here, once: the runtime user cannot write __pycache__, so without it
# every start and every HEALTHCHECK would compile the whole dependency tree from source.
# unchecked-hash: the image never changes, so the .pyc files are used without stat checks
# (and stay valid whatever mtimes COPY gives the sources).
RUN /opt/venv/bin/pip install --no-compile . \
 && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
      /opt/venv /src/migrations

FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="media-poller" \
      org.opencontainers.image.description="Polls generative-media providers and stores results content-addressed" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/media-poller"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STORAGE_URL=file:///data/artifacts \
    POLLER_HTTP_PORT=9090
RUN groupadd --system --gid 10001 poller \
 && useradd --system --uid 10001 --gid poller --home-dir /app --shell /usr/sbin/nologin poller \
 && mkdir -p /data/artifacts \
 && chown -R poller:poller /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Code and migrations stay root-owned and read-only for uid 10001: a compromised process
# must not be able to rewrite what the next start (or the next `migrate`) runs.
COPY --from=build /src/alembic.ini /src/main.py ./
COPY --from=build /src/migrations ./migrations
USER 10001:10001
VOLUME ["/data"]
EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
  CMD ["python", "main.py", "check"]
STOPSIGNAL SIGTERM
CMD ["python", "main.py", "run"]
