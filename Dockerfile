# syntax=docker/dockerfile:1
# joinshield: built in a Rust image, run from a slim Debian as an unprivileged user.
# .dockerignore keeps target/, .git, keys, certificates and .env out of the build context.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target/ are cache mounts: a rebuild after an edit recompiles the crate, not
# every dependency. The binary is copied out of the mount in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin joinshield \
    && install -D -m 0755 target/release/joinshield /out/joinshield

FROM debian:bookworm-slim
# The shield runs as `shield` (uid 10001). Its one writable folder is /var/lib/joinshield, where
# config/compose.toml (the image's configuration) keeps the bans (state_file). It is made and
# handed to the user before VOLUME: a volume Docker creates for it (named or anonymous) starts as
# a copy of this folder, owner included, so `docker run` and compose alike can save bans.
RUN groupadd --system --gid 10001 shield \
    && useradd --system --uid 10001 --gid shield --no-create-home --shell /usr/sbin/nologin shield \
    && install -d -o shield -g shield -m 0750 /var/lib/joinshield
COPY --from=build /out/joinshield /usr/local/bin/joinshield
COPY config /etc/joinshield
VOLUME ["/var/lib/joinshield"]
USER shield
ENV JOINSHIELD_CONFIG=/etc/joinshield/compose.toml
EXPOSE 8080 9901
# `healthcheck` reads only [admin] of $JOINSHIELD_CONFIG and asks its /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["joinshield", "healthcheck"]
ENTRYPOINT ["joinshield"]
CMD ["run"]
