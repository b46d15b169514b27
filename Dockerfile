# joinshield: build in a Rust image, run from a slim Debian with the binary and shipped config.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 shield \
    && mkdir -p /var/lib/joinshield && chown shield /var/lib/joinshield
COPY --from=build /src/target/release/joinshield /usr/local/bin/joinshield
COPY config /etc/joinshield
USER shield
ENV JOINSHIELD_CONFIG=/etc/joinshield/joinshield.toml
EXPOSE 8080 9901
HEALTHCHECK --interval=10s --timeout=3s CMD ["joinshield", "healthcheck"]
ENTRYPOINT ["joinshield"]
CMD ["run"]
