# fleetlens: agent, pipeline and report API in one image (`docker run fleetlens <command>`).
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 fleetlens \
 && useradd --system --uid 10001 --gid fleetlens --home-dir /var/lib/fleetlens \
      --create-home --shell /usr/sbin/nologin fleetlens \
 && install -d -o fleetlens -g fleetlens /var/lib/fleetlens/store

WORKDIR /opt/fleetlens
# The pinned dependencies of pyproject.toml, then the package (no dev extras).
COPY pyproject.toml README.md ./
COPY fleetlens ./fleetlens
COPY collectors ./collectors
COPY pipeline ./pipeline
COPY sql ./sql
RUN pip install --no-compile . && rm -rf /opt/fleetlens/build

USER fleetlens
WORKDIR /var/lib/fleetlens
ENTRYPOINT ["fleetlens"]
CMD ["--help"]
