# cacheproxy in a container. Build:  docker build -t cacheproxy .
# Run:    docker run -d -p 3145:3145 -v cacheproxy-cache:/var/cache/cacheproxy cacheproxy
# BASE picks the Python image; PIP_INDEX_URL, if set, is where the build installs cacheproxy's own
# dependencies from (for example another cacheproxy: http://127.0.0.1:3145/simple/ with
# --network=host). EXTRAS are the optional parts installed with it: s3, the shared tier (on by
# default, for fleets: docs/fleet.md); "s3,doctor" adds `cacheproxy doctor`.
ARG BASE=python:3.12-slim

FROM $BASE AS build
ARG PIP_INDEX_URL
ARG EXTRAS=s3
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cacheproxy ./cacheproxy
# doctor: ignore=pip-not-uv: one project into a venv, once per image; the image has pip already.
RUN python3 -m venv /opt/cacheproxy \
 && /opt/cacheproxy/bin/pip install --no-cache-dir --disable-pip-version-check --quiet \
      ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} ".${EXTRAS:+[$EXTRAS]}" \
 && find /opt/cacheproxy -name __pycache__ -prune -exec rm -rf {} + \
 && rm -rf /opt/cacheproxy/lib/python*/site-packages/pip

FROM $BASE
# A fixed uid, so a cache volume keeps its owner across image rebuilds.
RUN useradd --system --uid 10001 --user-group --no-create-home \
      --home-dir /var/cache/cacheproxy --shell /usr/sbin/nologin cacheproxy \
 && mkdir -p /var/cache/cacheproxy \
 && chown cacheproxy:cacheproxy /var/cache/cacheproxy
COPY --from=build /opt/cacheproxy /opt/cacheproxy
ENV PATH=/opt/cacheproxy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CACHEPROXY_HOST=0.0.0.0 \
    CACHEPROXY_PORT=3145 \
    CACHEPROXY_CACHE_DIR=/var/cache/cacheproxy
VOLUME /var/cache/cacheproxy
USER cacheproxy
EXPOSE 3145
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['CACHEPROXY_PORT'], timeout=2)"]
# SIGTERM stops it cleanly (docker stop); the cache survives in the volume.
ENTRYPOINT ["cacheproxy"]
CMD ["serve"]
