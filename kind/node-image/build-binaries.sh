#!/usr/bin/env bash
# Builds what a kind cluster needs from Go modules (and pause from C), into a
# cache outside the repository keyed by the versions in e2e/versions.env:
# kind; kubelet, kubeadm, kubectl, kube-proxy, kube-scheduler (the API server,
# controller manager and etcd come from e2e/build-control-plane.sh, same
# versions); containerd, ctr and its runc shim; crictl; coredns; pause.
# A second run with the same versions does nothing. Prints the directory
# holding the binaries on stdout; progress on stderr, Go's output in a log.
# With names (e.g. `kind kubectl`), builds only those.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
e2e=$(cd "$here/../../e2e" && pwd)
# shellcheck source=../../e2e/versions.env
source "$e2e/versions.env"

cache=${PHALANX_CACHE:-$HOME/.cache/phalanx}
key="kind-${KIND_VERSION}_k8s-${K8S_VERSION}_containerd-${CONTAINERD_VERSION}_crictl-${CRICTL_VERSION}_coredns-${COREDNS_VERSION}_pause-${PAUSE_VERSION}"
bin="$cache/bin/$key"
k8s_cmds=(kubelet kubeadm kubectl kube-proxy kube-scheduler)
wanted=(kind "${k8s_cmds[@]}" kube-apiserver kube-controller-manager etcd
  containerd ctr containerd-shim-runc-v2 crictl coredns pause)
[ $# -eq 0 ] || wanted=("$@")

complete() {
  local b
  for b in "${wanted[@]}"; do [ -x "$bin/$b" ] || return 1; done
}

# Whether $1 is wanted and not built yet.
needed() {
  [ -x "$bin/$1" ] && return 1
  [[ " ${wanted[*]} " == *" $1 "* ]]
}

if complete; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin" "$cache/locks"
# One build at a time (two `kind/cluster up` at once would race on the files).
exec 9>"$cache/locks/$key"
flock 9
if complete; then
  echo "$bin"
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# shellcheck source=quiet.sh
source "$here/quiet.sh"
quiet_start kind-build "$cache/bin/$key.log"

# go install of MODULE-PACKAGE@VERSION into $bin under the package's own name.
go_install() {
  local ldflags=$1
  shift
  GOBIN="$bin" quietly go install -trimpath -tags "no_aufs no_btrfs no_devmapper no_zfs" -ldflags "-s -w $ldflags" "$@"
}

if needed kind; then
  log "building kind v$KIND_VERSION"
  go_install "" "sigs.k8s.io/kind@v$KIND_VERSION"
fi

missing_k8s=()
for cmd in "${k8s_cmds[@]}"; do needed "$cmd" && missing_k8s+=("$cmd"); done
if [ ${#missing_k8s[@]} -gt 0 ]; then
  # shellcheck source=../../e2e/go-wrapper.sh
  source "$e2e/go-wrapper.sh"
  mod="$cache/src/$key/k8s"
  log "preparing the Kubernetes wrapper module"
  imports=()
  for cmd in "${k8s_cmds[@]}"; do imports+=("k8s.io/kubernetes/cmd/$cmd"); done
  quietly go_wrapper_module "$mod" "$K8S_VERSION" "k8s.io/kubernetes@v$K8S_VERSION" "${imports[@]}"
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  for cmd in "${missing_k8s[@]}"; do
    log "building $cmd v$K8S_VERSION"
    (cd "$mod" && quietly go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
    mv "$bin/$cmd.tmp" "$bin/$cmd"
  done
fi

if needed containerd || needed ctr || needed containerd-shim-runc-v2; then
  log "building containerd v$CONTAINERD_VERSION"
  m=github.com/containerd/containerd/v2
  go_install "-X $m/version.Version=v$CONTAINERD_VERSION -X $m/version.Package=$m" \
    "$m/cmd/containerd@v$CONTAINERD_VERSION" "$m/cmd/ctr@v$CONTAINERD_VERSION" \
    "$m/cmd/containerd-shim-runc-v2@v$CONTAINERD_VERSION"
fi

if needed crictl; then
  log "building crictl v$CRICTL_VERSION"
  go_install "-X sigs.k8s.io/cri-tools/pkg/version.Version=v$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@v$CRICTL_VERSION"
fi

if needed coredns; then
  log "building coredns v$COREDNS_VERSION"
  go_install "" "github.com/coredns/coredns@v$COREDNS_VERSION"
fi

# The control plane's own builds (last: e2e/cluster may be building them now), shared with e2e/cluster (same versions).
if needed kube-apiserver || needed kube-controller-manager || needed etcd; then
  control_plane=$("$e2e/build-control-plane.sh")
  for b in kube-apiserver kube-controller-manager etcd; do
    [ -x "$bin/$b" ] || cp "$control_plane/$b" "$bin/$b"
  done
fi

if needed pause; then
  log "building pause $PAUSE_VERSION"
  k8s_dir=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
  gcc -Os -static -DVERSION="v$PAUSE_VERSION" -o "$bin/pause.tmp" "$k8s_dir/build/pause/linux/pause.c"
  strip "$bin/pause.tmp"
  mv "$bin/pause.tmp" "$bin/pause"
fi

complete
log "done: $bin"
echo "$bin"
