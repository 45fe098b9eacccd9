# syntax=docker/dockerfile:1
#
# Portcullis image: one static binary in an empty image.
#
#   docker build -t ghcr.io/portcullis/portcullis:0.1.0 .
#
# Without a Docker engine, packaging/build-image.sh builds the same image as an archive from the
# static binary, reading this file's final stage for the config (docs/install.md).
#
# The builder runs packaging/build-static.sh, the same script CI runs, so the image and CI build
# the binary the same way (static musl executable; see the script for why musl). The final image
# is `scratch`: no shell, no libc, no CA bundle (upstream TLS roots are compiled in from
# webpki-roots; backend CAs come from Secrets), running as the numeric non-root user 65532 so
# kubelet can enforce runAsNonRoot.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
# musl-gcc compiles aws-lc-sys's C code for the musl target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build directory between builds; the binary is
# copied out of the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    bin="$(packaging/build-static.sh)" \
 && install -D -m 0555 "$bin" /out/usr/local/bin/portcullis

FROM scratch
LABEL org.opencontainers.image.title="portcullis" \
      org.opencontainers.image.description="Kubernetes ingress controller: TLS terminate, SNI pass-through and re-encrypt on one port" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/ /
# scratch sets no PATH; the exec-form ENTRYPOINT below finds the binary through it.
ENV PATH=/usr/local/bin
USER 65532:65532
# 8080 HTTP, 8443 TLS (the chart's Service maps 80/443 onto them, so no NET_BIND_SERVICE is
# needed), 10254 admin (/healthz, /readyz, /metrics).
EXPOSE 8080 8443 10254
ENTRYPOINT ["portcullis"]
# The listen addresses match EXPOSE (the binary defaults to :80/:443 and a loopback admin port).
CMD ["controller", "--http-addr=0.0.0.0:8080", "--https-addr=0.0.0.0:8443", "--admin-addr=0.0.0.0:10254"]
