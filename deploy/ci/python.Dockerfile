# A stand-in for the official python:3.11-slim-bookworm image, made from Debian's own packages, for
# machines that cannot pull from Docker Hub (deploy/ci/stand-ins.sh tags it with deploy/Dockerfile's
# FROM name, so that file builds unchanged). Debian's python3 is 3.11 in bookworm, as in the original;
# like the original it has `python` and `pip` on the PATH, pip may install anywhere, LANG is C.UTF-8.
ARG BASE=local/debian:bookworm
FROM ${BASE}
ENV LANG=C.UTF-8
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && ln -s /usr/bin/pip3 /usr/local/bin/pip
# The build machine's own CA certificates (an intercepting proxy's, say), so pip reaches the registry.
COPY certs/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
CMD ["python3"]
