# syntax=docker/dockerfile:1
# The loglake image: loglake-shipper, loglake-aggregator and loglake-query, installed from the
# wheel `make dist` builds (the shipper's native core compiled in release mode).
#
#   docker build -t loglake:0.1.0 .
#
# deploy/k8s/*.yaml run this image as loglake:0.1.0 (the version in pyproject.toml). The image
# runs as the non-root user loglake (uid 10001); the node DaemonSet runs it as root on purpose
# (see deploy/k8s/shipper-daemonset.yaml).

ARG PYTHON_VERSION=3.11
ARG RUST_VERSION=1.95

# Only a source of the Rust toolchain: the wheel is built below by the same Python and glibc
# (Debian bookworm) the runtime stage has, so the extension module links against what it runs on.
FROM rust:${RUST_VERSION}-slim-bookworm AS rust

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
COPY --from=rust /usr/local/cargo /usr/local/cargo
COPY --from=rust /usr/local/rustup /usr/local/rustup
ENV CARGO_HOME=/usr/local/cargo RUSTUP_HOME=/usr/local/rustup PATH=/usr/local/cargo/bin:$PATH
# rustc links through the system C compiler; make runs the Makefile's dist target
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make dist

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="loglake" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.description="Container log pipeline: shipper, aggregator, query" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 loglake \
 && useradd --system --uid 10001 --gid loglake --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin loglake
# The wheel and its dependencies from PyPI, nothing else: no compiler, no Rust, no sources.
# --only-binary: nothing may be compiled here; a dependency without a wheel fails the build.
COPY --from=build /src/dist/ /tmp/dist/
RUN pip install --no-cache-dir --only-binary=:all: /tmp/dist/loglake-*.whl \
 && rm -rf /tmp/dist \
 && loglake-shipper --version && loglake-aggregator --version && loglake-query --version
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# numeric, so kubelet can check runAsNonRoot (it cannot for a user name)
USER 10001:10001
WORKDIR /tmp
# shipper/aggregator metrics_address in deploy/k8s
EXPOSE 2020 2021
# The three entry points are on PATH: the manifests run one with `args`
# (loglake-shipper, loglake-aggregator; loglake-query through kubectl exec).
CMD ["loglake-shipper", "--config", "/etc/loglake/loglake.toml"]
