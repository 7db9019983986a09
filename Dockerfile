# The phalanx image (scheduler, topology agent, fake-GPU device plugin): the
# release binary built on the host, on a Debian bookworm base.
#
#   cargo build --release --locked --bin phalanx && docker build -t phalanx:kind .
#
# The binary is built outside the image because no Rust image can be pulled
# here and the host's cargo caches make a rebuild take seconds, not a cold
# compile; it needs glibc 2.36 or older, which a bookworm host (or any
# bookworm-based build) gives. BASE defaults to the Debian image that
# kind/node-image/build-images.sh makes with debootstrap, so nothing is pulled;
# on a machine with registry access, --build-arg BASE=debian:bookworm-slim works too.
ARG BASE=phalanx-kind/debian:bookworm
FROM ${BASE}
COPY target/release/phalanx /usr/local/bin/phalanx
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/phalanx"]
