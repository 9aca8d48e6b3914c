# debug-access: the bot, serving. Build:  docker build -t debug-access:0.1.0 .
#
# Two stages: the build stage installs the pinned runtime set (requirements/runtime.lock) and the
# package into a virtualenv with scripts/image-install.sh, the same script CI runs without Docker;
# the final stage copies only that virtualenv. No OpenBao, no compilers, no test tools.
# The process runs as UID 10001, needs no writable path but /tmp, and so runs under
# readOnlyRootFilesystem (deploy/kubernetes mounts an emptyDir at /tmp).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY requirements/runtime.lock requirements/
COPY scripts/image-install.sh scripts/
COPY bot/ bot/
RUN bash scripts/image-install.sh /opt/debug-access

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="debug-access" \
      org.opencontainers.image.description="Slack chat-ops bot for temporary, approved production access via Vault/OpenBao" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/debug-access/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PORT=3000
COPY --from=build /opt/debug-access /opt/debug-access
WORKDIR /tmp
USER 10001:10001
EXPOSE 3000
ENTRYPOINT ["debug-access"]
CMD ["serve"]
