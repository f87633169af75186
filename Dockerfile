# vitd-cds production image: gunicorn (`cds-service serve`), non-root, configured only by env.
# Build: docker build -t vitd-cds .   Run: see compose.yaml and deploy/k8s/.

# --- build stage: wheel-only install into a virtualenv -------------------------------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

COPY pyproject.toml README.md ./
COPY cds_service ./cds_service
# cds_service/card_templates links to the card texts in cards/: the wheel copies them in.
COPY cards ./cards
# cds_service/fixture_data links to the synthetic patients in fixtures/ (`cds-service fixtures`,
# `invoke --patient`, /preview): the wheel copies them in too.
COPY fixtures ./fixtures
# Every dependency ships a manylinux wheel (psycopg[binary] included): no compiler needed,
# and --only-binary refuses any source build (our own package builds with setuptools alone).
RUN pip install --no-cache-dir --only-binary=:all: . \
    && python -m compileall -q /opt/venv/lib

# --- runtime stage: the virtualenv and nothing else ----------------------------------------
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="vitd-cds" \
      org.opencontainers.image.description="CDS Hooks 2.0 service: vitamin D, calcium, vitamin K and VKA safety" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 cds \
    && useradd --system --uid 10001 --gid cds --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin cds \
    && mkdir -p /app/var \
    && chown cds:cds /app/var

COPY --from=build /opt/venv /opt/venv

# Configuration is environment only (README, "Configuration"). Defaults suit a container:
# listen on all interfaces (auth stays ON: CDS_TRUSTED_ISSUERS_FILE must be provided),
# metrics of all workers under /tmp (an emptyDir when the root filesystem is read-only).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    WEB_CONCURRENCY=2 \
    WEB_THREADS=16 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/vitd-cds-metrics

WORKDIR /app
USER 10001:10001
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=2)"]

# gunicorn's master handles SIGTERM: no new connections, calls in flight finish, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["cds-service"]
CMD ["serve"]
