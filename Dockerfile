# cardvault: one process serving the vault's HTTPS API.
# Build: docker build -t cardvault .
# Run (production): mount a config, the master key and the certificate, point at a durable Redis:
#   docker run -p 8443:8443 -v /etc/cardvault:/etc/cardvault:ro \
#     -e CARDVAULT_CONFIG=/etc/cardvault/cardvault.yaml cardvault
FROM python:3.11-slim-bookworm

# redis-server only serves the embedded default (no CARDVAULT_REDIS_URL); production points at its own Redis.
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/cardvault --create-home --shell /usr/sbin/nologin cardvault

WORKDIR /opt/cardvault
COPY pyproject.toml README.md ./
COPY service ./service
COPY config ./config
RUN pip install --no-cache-dir . && rm -rf /root/.cache

ENV CARDVAULT_DATA_DIR=/var/lib/cardvault \
    CARDVAULT_SERVER__HOST=0.0.0.0 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER cardvault:cardvault
VOLUME ["/var/lib/cardvault"]
EXPOSE 8443
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["cardvault", "health"]
CMD ["cardvault", "serve"]
