# syntax=docker/dockerfile:1
# terra-xfer: one image for every stage (`terra-xfer <stage>`), as deploy/k8s runs it.
#   docker build -t ghcr.io/terra-ref/terra-xfer:0.1.0 .

# Builder: the project's wheel and the wheels of its dependencies.
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY terra_xfer ./terra_xfer
COPY producers ./producers
COPY consumers ./consumers
COPY schemas ./schemas
RUN pip wheel --wheel-dir /wheels .

# Runtime: a clean slim image with only the installed wheels, run as an unprivileged user.
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 terra \
 && useradd --system --uid 10001 --gid terra --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin terra
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels terra-xfer
USER 10001:10001
WORKDIR /tmp
EXPOSE 9100
ENTRYPOINT ["terra-xfer"]
CMD ["--help"]
