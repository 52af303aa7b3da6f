# A fedrun image: the coordinator (`fedrun run`) and TFF's executor service (`fedrun worker`) in
# one environment. Installed exactly as `make venv` installs .venv: requirements/lock.txt, then
# requirements/tff.txt with --no-deps (TFF 0.87.0's metadata pins a jaxlib the registry does not
# serve), then fedrun itself; versions live only in those files.
FROM python:3.11-slim AS builder
# An offline build (make image-test) passes a wheel directory here; a normal build leaves both
# unset and pip uses the registry.
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements/lock.txt requirements/tff.txt requirements/
RUN pip install -r requirements/lock.txt \
 && pip install --no-deps -r requirements/tff.txt
COPY pyproject.toml README.md ./
COPY cluster/ cluster/
COPY fedrun/ fedrun/
RUN pip install --no-deps --no-build-isolation .

FROM python:3.11-slim
# uid/gid 10001, as deploy/k8s's runAsUser/runAsGroup; /data holds run folders.
RUN groupadd --gid 10001 fedrun \
 && useradd --uid 10001 --gid 10001 --home-dir /data --create-home --shell /usr/sbin/nologin fedrun
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=3
WORKDIR /data
USER 10001:10001
# 8000: a worker's executor service (`fedrun worker --port 8000`); 9090: the coordinator's /metrics
# when started with --metrics-port 9090 --metrics-host 0.0.0.0.
EXPOSE 8000 9090
# Healthy means the role's port accepts a TCP connection: a worker's --port (default 8000), a
# coordinator's --metrics-port. The role is read from PID 1's arguments, as one image serves both.
# A coordinator without --metrics-port listens on nothing; it is healthy while it runs, since the
# container ends with the run. (Kubernetes ignores HEALTHCHECK; deploy/k8s has its own probes.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import socket; a = [s for t in open('/proc/1/cmdline').read().split(chr(0)) for s in t.split('=', 1)]; flag = '--port' if 'worker' in a else '--metrics-port'; port = a[a.index(flag) + 1] if flag in a else ('8000' if flag == '--port' else None); port is None or socket.create_connection(('127.0.0.1', int(port)), 3).close()"]
ENTRYPOINT ["fedrun"]
CMD ["run", "--out", "/data/run"]
