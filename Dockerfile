# syncline in a container (docs/operations.md, "A container image"):
#
#   docker build -t syncline .
#   docker run -p 8000:8000 -v syncline-data:/data syncline
#
# serves the example application (syncline.examples.notes) on a SQLite file in the /data
# volume. For your own application, copy it into /app (below) and give its MODULE:APP
# and options as the command, e.g. `docker run ... syncline myapp.main:app
# --db postgresql://... --backplane redis://redis:6379/0 --host 0.0.0.0`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/syncline/bin:$PATH

# syncline with its server, PostgreSQL and Redis extras, in a virtual environment of
# its own; the source is not kept.
COPY . /src
RUN python -m venv /opt/syncline \
    && /opt/syncline/bin/pip install '/src[standard,postgres,redis]' \
    && rm -rf /src

# A user without privileges, owning only the data directory.
RUN useradd --system --uid 10001 --user-group --home-dir /data --create-home syncline

# The application: `syncline serve` imports MODULE:APP from here.
WORKDIR /app
# COPY myapp /app/myapp

USER 10001
VOLUME /data
EXPOSE 8000

# Liveness: /sync/health answers 200 while the process serves (no database read).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/sync/health', timeout=2).status != 200)"]

ENTRYPOINT ["syncline", "serve"]
CMD ["syncline.examples.notes.app:app", "--db", "/data/syncline.sqlite3", "--host", "0.0.0.0", "--port", "8000"]
