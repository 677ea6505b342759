# One image for both services: `python -m feed_service` or `python -m edge_service`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY feed_service ./feed_service
COPY edge_service ./edge_service
COPY tickstream_common ./tickstream_common
COPY clients/python/tickstream_client ./clients/python/tickstream_client
COPY data ./data
# .[cluster] adds nats-server (the nodes of deploy/docker-compose.cluster.yml run this image);
# /data is their JetStream store, owned by the user so a fresh named volume is writable.
# (DL3013: this is the project itself; every dependency is pinned in pyproject.toml.)
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[cluster]" && useradd --uid 10001 --no-create-home tickstream \
    && mkdir /data && chown 10001 /data
USER 10001
EXPOSE 50051 8000
# The edge by default; compose sets each service's command and healthcheck.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
CMD ["python", "-m", "edge_service"]
