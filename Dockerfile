# ztauthz container image: ext_authz check service, sidecar injector and dev tools, one image.
#
# Build (docs/containers.md; `make container-check` runs exactly this, and the rest):
#   docker build -t ztauthz:0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
# Run (configuration and policies are mounted; nothing is written outside /tmp):
#   docker run --rm --read-only --tmpfs /tmp --cap-drop ALL \
#     --security-opt no-new-privileges -p 127.0.0.1:9000:9000 \
#     -e ZTAUTHZ_SERVER__CHECK__HOST=0.0.0.0 \
#     -v "$PWD/config.yaml:/etc/ztauthz/config/config.yaml:ro" \
#     -v "$PWD/policies:/etc/ztauthz/policies:ro" \
#     ztauthz:0.1.0
#   (keep the check port on loopback or on a sidecar network: see docs/containers.md)
#
# Layout: /opt/ztauthz is a virtualenv holding the locked dependencies; the application code is
# in /opt/ztauthz/src. Dependencies come only from requirements.lock (pip-compile
# --generate-hashes), wheels only, every file checked against its hash.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build: resolve nothing, verify all
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

# A virtualenv without pip: the base image's pip installs into it (--python), so no packaging
# tools end up in the runtime image.
RUN python -m venv --without-pip /opt/ztauthz

COPY requirements.lock /tmp/requirements.lock
# --require-hashes: every distribution must match a hash in the lock (and be pinned).
# --only-binary: wheels only, so nothing is compiled and no compiler is needed anywhere.
# --no-deps: the lock is complete; pip resolves nothing of its own.
RUN python -m pip --python /opt/ztauthz/bin/python install \
        --require-hashes --only-binary=:all: --no-deps \
        -r /tmp/requirements.lock
# xds-protos bundles an old copy of opentelemetry/proto that overwrites opentelemetry-proto's
# files when pip installs it later (the order is not guaranteed); reinstall the real one
# last, from its own hashed entry in the lock.
RUN awk '/^opentelemetry-proto==/{p=1} p{print} p && !/\\$/{exit}' /tmp/requirements.lock \
        > /tmp/opentelemetry-proto.lock \
    && python -m pip --python /opt/ztauthz/bin/python install \
        --require-hashes --only-binary=:all: --no-deps --force-reinstall \
        -r /tmp/opentelemetry-proto.lock

# The code only (the policy schema ships inside app/policy); configuration and policies are
# mounted at run time, never baked in.
COPY app /opt/ztauthz/src/app
# Bytecode is compiled here: the runtime root filesystem is read-only.
RUN /opt/ztauthz/bin/python -m compileall -q /opt/ztauthz/src \
    && /opt/ztauthz/bin/python -m compileall -q /opt/ztauthz/lib

# ---------------------------------------------------------------- runtime: no compilers, no pip, no root
FROM ${PYTHON_IMAGE} AS runtime

# OCI image-spec annotations (pre-defined keys). VERSION and the licence are pyproject.toml's
# (a test keeps them equal); REVISION, CREATED and SOURCE (the repository's URL) are passed
# by the build command (docs/containers.md).
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="ztauthz" \
      org.opencontainers.image.description="Zero-trust authorization sidecar for Envoy ext_authz: OIDC tokens, least-privilege policies, explained decisions." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="ztauthz" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A fixed, unprivileged UID/GID (65532, as in distroless "nonroot") that manifests can name, and
# no package tools left for an intruder.
RUN groupadd --system --gid 65532 ztauthz \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin ztauthz \
    && python -m pip uninstall --yes --quiet pip setuptools wheel \
    && rm -rf /root/.cache /tmp/*

COPY --from=build /opt/ztauthz /opt/ztauthz

ENV PATH=/opt/ztauthz/bin:${PATH} \
    PYTHONPATH=/opt/ztauthz/src \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

USER 65532:65532
WORKDIR /tmp

# 9000: ext_authz check (Envoy only); 9100: admin (/healthz, /readyz); 8443: injector webhook.
EXPOSE 9000 9100 8443

# Liveness of the admin listener. It follows ZTAUTHZ_SERVER__ADMIN__PORT when that is how the
# port is set; if the config file moves the admin port, override this check.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('ZTAUTHZ_SERVER__ADMIN__PORT', '9100'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["python", "-m", "app.cli"]
CMD ["serve", "--config", "/etc/ztauthz/config/config.yaml"]
