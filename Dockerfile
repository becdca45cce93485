# airtable_cached: the sync process (and a base image for agents that use the cache).
#
#   docker build -t airtable-cached .
#   docker build --build-arg EXTRAS="[postgres]" -t airtable-cached:postgres .   # for a PostgreSQL cache
#   docker run -e AIRTABLE_API_KEY -v airtable-cache:/data airtable-cached          # serve-sync
#   docker run -e AIRTABLE_API_KEY -v airtable-cache:/data airtable-cached airtable-cached status
#
# The database lives on the /data volume; files are created 0600 and owned by the unprivileged
# user "app" (uid 10001), so every container sharing the volume must run as that uid.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIRTABLE_CACHED_PATH=/data/cache.sqlite3 \
    AIRTABLE_CACHED_BACKUP_DIR=/data/backups

# Optional extras, e.g. "[postgres]" for AIRTABLE_CACHED_URL=postgresql://... (docker-compose.yml).
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY airtable_cached ./airtable_cached
RUN pip install ".${EXTRAS}" && rm -rf /src

RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data/backups && chown -R app:app /data && chmod 0700 /data /data/backups
USER app
WORKDIR /home/app
VOLUME ["/data"]

# 0 healthy; non-zero on damage (corruption, wrong schema version, world-readable files).
# Warnings (a dead-lettered write) do not make the container unhealthy: `airtable-cached check`
# without --fail-on reports them to cron jobs.
HEALTHCHECK --interval=60s --timeout=30s --start-period=20s --retries=3 \
    CMD ["airtable-cached", "check", "--quick", "--fail-on", "error"]

# SIGTERM stops it cleanly: the current flush finishes (or, after --stop-grace seconds, its request
# is abandoned) and the queue stays on disk.
STOPSIGNAL SIGTERM
CMD ["airtable-cached", "serve-sync"]
