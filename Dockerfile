# syntax=docker/dockerfile:1.7
# Build: docker build -t wagate .
# Run:   docker run -p 8080:8080 -p 127.0.0.1:9090:9090 wagate
#
# Multi-stage: the toolchain image is pinned to the version CI uses; the
# runtime image carries only the binary and its config, and runs as a
# non-root user.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY config ./config
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin wagate \
    && cp target/release/wagate /wagate

FROM debian:bookworm-slim
# TLS roots are compiled in (webpki-roots), so no ca-certificates package.
RUN useradd --system --uid 10001 --home-dir /var/lib/wagate --create-home wagate
COPY --from=build /wagate /usr/local/bin/wagate
COPY config/wagate.toml /etc/wagate/wagate.toml
USER wagate
WORKDIR /var/lib/wagate
# The admin listener defaults to loopback; inside a container it must listen
# on all interfaces to be scraped. Publish it only to trusted networks.
ENV WAGATE_LISTEN__ADMIN=0.0.0.0:9090 \
    WAGATE_STORE__PATH=/var/lib/wagate/breakers.db
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/wagate"]
CMD ["serve", "--config", "/etc/wagate/wagate.toml"]
