# syntax=docker/dockerfile:1
#
# The autoclaim image: one binary, `autoclaim`, for the service (`run`, the default command) and its
# tools (`create-topics`, `loadgen`, `publish`, `replay`, ...).
#
#   docker build -t autoclaim:dev .
#   docker run --rm autoclaim:dev --help
#
# docker-compose.yml builds it as `autoclaim:dev`. tests/compose.rs checks this file against
# Cargo.toml and the compose file.

# ---------------------------------------------------------------- build
FROM rust:1-bookworm AS builder

# rdkafka-sys builds librdkafka from its bundled sources (configure + make, C and C++) and links
# the system's zlib, OpenSSL (TLS, SCRAM) and libcurl (OAUTHBEARER OIDC); zstd is built in.
# protobuf is compiled by protox, in Rust, so no protoc is needed.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config zlib1g-dev libssl-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The cargo registry and the target dir are BuildKit cache mounts: after a source change only the
# crate itself is recompiled, not rdkafka and the other dependencies. The target dir is not part of
# the layer, so the binary is copied out in the same step. The `dist` profile (Cargo.toml) is the
# release build stripped of debug info and symbols.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked --bin autoclaim \
 && install -D -m 0755 target/dist/autoclaim /out/autoclaim

# ---------------------------------------------------------------- runtime
# Only the binary and the libraries it links: no compiler, cargo or -dev packages (tests/compose.rs
# checks).
FROM debian:bookworm-slim

# ca-certificates: the trust store that verifies managed Kafka's certificates; curl for the compose
# healthcheck (GET /readyz); the libraries librdkafka links: zlib, OpenSSL, libcurl (tests/compose.rs
# checks this list against the binary's shared libraries).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl zlib1g libssl3 libcurl4 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 autoclaim \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin autoclaim

COPY --from=builder /out/autoclaim /usr/local/bin/autoclaim

USER 10001:10001
WORKDIR /tmp

# In a container the HTTP server (/metrics, /healthz, /readyz, /v1/...) must listen on every
# interface, not on the binary's default 127.0.0.1.
ENV AUTOCLAIM_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080

# No HEALTHCHECK here: the same image also runs one-shot tools (create-topics, loadgen) that serve
# no HTTP. docker-compose.yml gives the `autoclaim` service its own healthcheck.
ENTRYPOINT ["autoclaim"]
CMD ["run"]
