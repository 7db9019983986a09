# Small, non-root image of the phalanx binary (scheduler and, later, agent).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
RUN cargo build --release --locked --bin phalanx

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/phalanx /usr/local/bin/phalanx
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/phalanx"]
