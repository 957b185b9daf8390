# syntax=docker/dockerfile:1
# Sluice's image: `docker build -t sluice .`, then `docker run -p 8080:8080 sluice`.
# tests/image.rs reads this file and runs the binary exactly as the last
# stage says (user, working directory, environment, volume, entrypoint,
# health check) in a read-only root made like this base; keep them in step.

FROM rust:1.95-slim-trixie AS build
WORKDIR /src
# A smaller binary for the image only (the repository's profile keeps the
# symbols that profiling needs).
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
# Dependencies first, in a layer of their own: stub targets stand in for
# the sources, so a change to src/ rebuilds only Sluice.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for bench in $(sed -n '/^\[\[bench\]\]/{n;s/^name = "\(.*\)"/\1/p}' Cargo.toml); do \
         echo 'fn main() {}' > "benches/$bench.rs"; done \
    && cargo build --release --locked --bin sluice \
    && rm -rf src
COPY src ./src
# COPY keeps the sources' times, which may be older than the stub build.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin sluice \
    && mkdir -p /out/data && cp target/release/sluice /out/sluice

# distroless/cc: glibc, libgcc, CA roots, tzdata and a nonroot user
# (65532); no shell, no package manager.
FROM gcr.io/distroless/cc-debian13:nonroot
COPY --from=build /out/sluice /usr/local/bin/sluice
COPY --from=build --chown=65532:65532 /out/data /var/lib/sluice
COPY config/sluice.toml /etc/sluice/sluice.toml
USER 65532:65532
# Relative data paths (the default `data_dir = "data"`) land in the volume.
WORKDIR /var/lib/sluice
VOLUME ["/var/lib/sluice"]
ENV SLUICE_CONFIG=/etc/sluice/sluice.toml \
    SLUICE__SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/sluice", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["run"]
