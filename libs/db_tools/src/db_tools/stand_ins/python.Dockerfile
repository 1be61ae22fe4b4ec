# Local stand-in for python:3.11-slim, built only when that image cannot be pulled (no
# registry reachable). Debian bookworm's python3 is 3.11; the Dockerfiles of this repository
# need what the official image gives them: `python` and `pip` on PATH, pip free to install.
ARG BASE
FROM ${BASE}
ARG PYTHON_VERSION=3.11
RUN set -eu; \
    apt-get update -qq; \
    apt-get install -y -qq --no-install-recommends \
        python3 python3-pip python-is-python3 ca-certificates >/dev/null; \
    python3 -c "import sys; assert '%d.%d' % sys.version_info[:2] == '${PYTHON_VERSION}', sys.version"; \
    # Debian marks its Python as externally managed (PEP 668); the official image's is not.
    rm -f /usr/lib/python3*/EXTERNALLY-MANAGED; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
ENV LANG=C.UTF-8
LABEL org.data-layer.stand-in="python:3.11-slim from Debian packages"
CMD ["python3"]
