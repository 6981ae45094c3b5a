# A stand-in for prom/prometheus, from Debian's prometheus: the binary is the entrypoint, as in the
# original, so compose's `command:` (its flags) works unchanged; data in /prometheus (Debian's build
# defaults to /var/lib/prometheus/metrics2: a link to it).
ARG BASE=local/debian:bookworm
FROM ${BASE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && mkdir -p /prometheus && chown 65534:65534 /prometheus \
    && rm -rf /var/lib/prometheus/metrics2 && ln -s /prometheus /var/lib/prometheus/metrics2
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml"]
