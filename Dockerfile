# syntax=docker/dockerfile:1
# The roster image: the one `roster` binary on a distroless base, running as non-root.
#   docker build -t roster .
# (Not built in this repository's CI: no container engine runs there.)

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Registry, git and target caches persist across builds; the binary is copied out of the
# cache mount, which is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin roster \
    && install -D -m 0755 target/release/roster /out/roster

# glibc, CA certificates and a nonroot user (65532), nothing else: no shell, no package
# manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/roster /usr/local/bin/roster
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/roster"]
CMD ["run"]
