# Multi-stage build: a static-ish release binary on a slim Debian base.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin sluice

FROM debian:bookworm-slim
# CA roots for TLS to OpenAI and Azure.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY config /etc/sluice
USER sluice
ENV SLUICE_CONFIG=/etc/sluice/sluice.toml \
    SLUICE__SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sluice"]
