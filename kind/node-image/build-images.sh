#!/usr/bin/env bash
# Builds, with no image registry, the images a kind cluster here needs:
#   phalanx-kind/debian:bookworm    a Debian base from debootstrap (every other image starts here)
#   registry.k8s.io/...             the images `kubeadm config images list` names, from the
#                                   binaries of build-binaries.sh (tagged as kubeadm expects)
#   phalanx-kind/node:<key>         the node image: Dockerfile.node plus those images imported
#                                   into its containerd (kind's `build node-image` would pull)
#   phalanx-workload:1              busybox (static) for test pods' real containers
# Each is built only when its tag is missing; the node image's tag is keyed by
# e2e/versions.env and the files that go into it. Prints the node image's name.
# `build-images.sh base` builds only the Debian base; `workload`, the base and
# the workload image (all that a stock kindest/node cluster needs).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../e2e/versions.env
source "$here/../../e2e/versions.env"

cache=${PHALANX_CACHE:-$HOME/.cache/phalanx}
base=phalanx-kind/debian:bookworm
workload=phalanx-workload:1
# Keyed by what goes into the node image.
key=$(cd "$here" && cat ../../e2e/versions.env Dockerfile.node Dockerfile.component runc-wrapper kubelet-cgroup-v1 \
  12-phalanx-cgroup-v1.conf | sha256sum | cut -c1-12)
node="phalanx-kind/node:v$K8S_VERSION-$key"
mirror=${PHALANX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
export DOCKER_BUILDKIT=0 # the Debian engine's builder; no buildx needed

have() { docker image inspect "$1" >/dev/null 2>&1; }
mkdir -p "$cache/tmp"
# shellcheck source=quiet.sh
source "$here/quiet.sh"
quiet_start kind-images "$cache/kind-images.log"

build_base() {
  have "$base" && return 0
  command -v debootstrap >/dev/null || { log "debootstrap is missing (apt-get install debootstrap)"; return 1; }
  log "building $base with debootstrap"
  local root
  root=$(mktemp -d "$cache/tmp/debootstrap.XXXXXX")
  quietly debootstrap --variant=minbase bookworm "$root" "$mirror"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | quietly docker import --change 'CMD ["bash"]' - "$base"
  rm -rf "$root"
}

# build_component IMAGE BINARY [PACKAGES]: the binary on the base.
build_component() {
  local image=$1 binary=$2 packages=${3:-} context
  have "$image" && return 0
  log "building $image"
  context=$(mktemp -d "$cache/tmp/context.XXXXXX")
  cp "$bin/$binary" "$context/"
  quietly docker build -q -t "$image" -f "$here/Dockerfile.component" --build-arg BASE="$base" \
    --build-arg BINARY="$binary" --build-arg EXTRA_PACKAGES="$packages" "$context"
  rm -rf "$context"
}

build_pause() {
  local image=$1 context
  have "$image" && return 0
  log "building $image"
  context=$(mktemp -d "$cache/tmp/context.XXXXXX")
  cp "$bin/pause" "$context/"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$context/Dockerfile"
  quietly docker build -q -t "$image" "$context"
  rm -rf "$context"
}

build_workload() {
  have "$workload" && return 0
  log "building $workload"
  quietly docker build -q -t "$workload" -f "$here/Dockerfile.workload" --build-arg BASE="$base" "$here"
}

# expect IMAGE WANTED-TAG: stops when kubeadm wants another version than the pinned one.
expect() {
  [ "${1##*:}" = "$2" ] && return 0
  log "kubeadm v$K8S_VERSION lists $1, but e2e/versions.env pins $2: update the pin"
  return 1
}

# The images kubeadm's static pods and add-ons use, built as kubeadm names them.
build_kubernetes_images() {
  local image name
  kubernetes_images=()
  for image in $("$bin/kubeadm" config images list --kubernetes-version "v$K8S_VERSION" 2>/dev/null); do
    name=${image%:*}
    case "${name##*/}" in
      kube-proxy) expect "$image" "v$K8S_VERSION" && build_component "$image" kube-proxy "iptables conntrack" ;;
      kube-*) expect "$image" "v$K8S_VERSION" && build_component "$image" "${name##*/}" ;;
      etcd) expect "$image" "$ETCD_VERSION-0" && build_component "$image" etcd ;;
      coredns) expect "$image" "v$COREDNS_VERSION" && build_component "$image" coredns ;;
      pause) expect "$image" "$PAUSE_VERSION" && build_pause "$image" ;;
      *) log "kubeadm lists $image, which this script does not know how to build"; return 1 ;;
    esac
    kubernetes_images+=("$image")
  done
  [ ${#kubernetes_images[@]} -gt 0 ] || { log "kubeadm config images list printed nothing"; return 1; }
  # containerd's sandbox image in kind's config.toml, and older pins some tools still name.
  for image in registry.k8s.io/pause:3.10 registry.k8s.io/pause:3.10.1; do
    have "$image" || quietly docker tag "registry.k8s.io/pause:$PAUSE_VERSION" "$image"
    kubernetes_images+=("$image")
  done
}

# The node's base: Dockerfile.node on a context staged from the binaries and kind's files.
build_node_base() {
  local image=$1 context kind_dir
  have "$image" && return 0
  log "building $image"
  context=$(mktemp -d "$cache/tmp/context.XXXXXX")
  mkdir "$context/bin"
  cp "$bin"/{containerd,ctr,containerd-shim-runc-v2,crictl,kubelet,kubeadm,kubectl} "$context/bin/"
  kind_dir=$(cd "$cache/tmp" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kind@v$KIND_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
  cp -r "$kind_dir/images/base/files" "$context/kind-files"
  chmod -R u+w "$context/kind-files"
  cp "$here"/{runc-wrapper,kubelet-cgroup-v1,12-phalanx-cgroup-v1.conf} "$context/"
  quietly docker build -q -t "$image" -f "$here/Dockerfile.node" --build-arg BASE="$base" \
    --build-arg K8S_VERSION="$K8S_VERSION" "$context"
  rm -rf "$context"
}

# Imports the Kubernetes images into a running node base's containerd (pinned,
# so the kubelet never collects them) and commits the result.
assemble_node() {
  local node_base=$1 image
  log "importing ${#kubernetes_images[@]} images into the node's containerd"
  container=$(docker run -d --privileged --entrypoint sleep "$node_base" infinity)
  trap 'docker rm -f "$container" >/dev/null 2>&1 || true' EXIT
  docker exec -d "$container" sh -c 'containerd >/var/log/containerd-import.log 2>&1'
  for _ in $(seq 100); do docker exec "$container" ctr version >/dev/null 2>&1 && break; sleep 0.2; done
  for image in "${kubernetes_images[@]}"; do
    docker save "$image" | quietly docker exec -i "$container" ctr -n k8s.io images import \
      --label io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests -
  done
  docker exec "$container" sh -c 'kill $(pidof containerd); while pidof containerd >/dev/null; do sleep 0.2; done; rm -f /var/log/containerd-import.log'
  quietly docker commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
    --change 'CMD []' "$container" "$node"
  docker rm -f "$container" >/dev/null
  trap - EXIT
}

case "${1:-}" in
  base)
    build_base
    echo "$base"
    exit 0
    ;;
  workload)
    build_base
    build_workload
    echo "$workload"
    exit 0
    ;;
esac
if have "$node" && have "$workload"; then
  echo "$node"
  exit 0
fi
mkdir -p "$cache/locks"
exec 9>"$cache/locks/kind-images"
flock 9

bin=$("$here/build-binaries.sh")
build_base
build_workload
if ! have "$node"; then
  build_kubernetes_images
  build_node_base "phalanx-kind/node-base:v$K8S_VERSION-$key"
  assemble_node "phalanx-kind/node-base:v$K8S_VERSION-$key"
  docker rmi "phalanx-kind/node-base:v$K8S_VERSION-$key" >/dev/null
  # Node images of other keys, unless a cluster still runs on one.
  docker images --format '{{.Repository}}:{{.Tag}}' phalanx-kind/node | grep -vxF "$node" |
    xargs -r docker rmi >/dev/null 2>&1 || true
fi
log "done: $node ($(docker image inspect -f '{{.Size}}' "$node" | awk '{printf "%.0f MB", $1 / 1e6}'))"
echo "$node"
