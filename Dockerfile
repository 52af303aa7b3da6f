# A fedrun image: the coordinator (`fedrun run`) and TFF's executor service in one environment.
FROM python:3.11-slim
WORKDIR /opt/fedrun
COPY requirements/ requirements/
# TFF 0.87.0 goes in with --no-deps beside the pinned list (its metadata pins an unavailable jaxlib).
RUN pip install --no-cache-dir -r requirements/lock.txt \
 && pip install --no-cache-dir --no-deps -r requirements/tff.txt
COPY pyproject.toml README.md ./
COPY cluster/ cluster/
COPY fedrun/ fedrun/
RUN pip install --no-cache-dir --no-deps --no-build-isolation .
ENV TF_CPP_MIN_LOG_LEVEL=3
ENTRYPOINT ["fedrun"]
CMD ["run", "--out", "/data/run"]
