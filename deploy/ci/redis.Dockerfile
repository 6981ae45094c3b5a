# A stand-in for the redis image of deploy/compose/compose.yaml, from Debian's redis-server: same
# command line (`redis-server --appendonly yes ...`), data in /data, redis-cli for the health check.
# Like the original (built with protected mode off), it accepts clients from other containers.
ARG BASE=local/debian:bookworm
FROM ${BASE}
# hadolint ignore=DL3008,SC2016
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server redis-tools \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && mkdir /data && chown 65534:65534 /data \
    && printf '%s\n' '#!/bin/sh' 'if [ "$1" = redis-server ]; then shift; exec redis-server --protected-mode no "$@"; fi' \
       'exec "$@"' >/usr/local/bin/docker-entrypoint.sh \
    && chmod 755 /usr/local/bin/docker-entrypoint.sh
USER 65534:65534
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
