# ptp-master (and ptp-agent / ptp-mcp) in one image.
#   docker build -t pytest-platform .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ptp-master --bin ptp-agent --bin ptp-mcp \
 && mkdir /out && cp target/release/ptp-master target/release/ptp-agent target/release/ptp-mcp /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /data ptp && mkdir /data && chown ptp /data
COPY --from=build /out/ /usr/local/bin/
USER ptp
WORKDIR /data
ENV PTP_LISTEN=0.0.0.0:8080 PTP_DB=/data/ptp.sqlite NATS_URL=nats://nats:4222
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["ptp-master"]
