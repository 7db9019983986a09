#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler (which
# the agreement test runs beside phalanx) and kwok from Go modules
# (through the Go module proxy) into a cache outside the repository, keyed by
# the versions in e2e/versions.env. A second run with the same versions does
# nothing. Prints the directory holding the binaries on stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${PHALANX_CACHE:-$HOME/.cache/phalanx}
key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
bin="$cache/bin/$key"
wanted=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

complete() {
  local b
  for b in "${wanted[@]}"; do [ -x "$bin/$b" ] || return 1; done
}

if complete; then
  echo "$bin"
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
mkdir -p "$bin"
start=$(date +%s)
log() { echo "[build-control-plane] $(( $(date +%s) - start ))s: $*" >&2; }

# The wrapper module pins the staging modules (see go-wrapper.sh).
# shellcheck source=go-wrapper.sh
source "$here/go-wrapper.sh"
mod="$cache/src/$key/wrapper"
log "preparing the wrapper module (downloads modules on the first run)"
go_wrapper_module "$mod" "$K8S_VERSION" "k8s.io/kubernetes@v$K8S_VERSION" "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" \
  go.etcd.io/etcd/server/v3 k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler

minor=$(echo "$K8S_VERSION" | cut -d. -f2)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
(
  cd "$mod"
  if [ ! -x "$bin/etcd" ]; then
    log "building etcd v$ETCD_VERSION"
    go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$bin/etcd.tmp" "$bin/etcd"
  fi
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    if [ ! -x "$bin/$cmd" ]; then
      log "building $cmd v$K8S_VERSION"
      go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$bin/$cmd.tmp" "$bin/$cmd"
    fi
  done
)

if [ ! -x "$bin/kwok" ]; then
  log "building kwok v$KWOK_VERSION"
  # kwok's go.mod has no replace lines, so it installs directly as its own module.
  tmpbin=$(mktemp -d)
  GOBIN="$tmpbin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  mv "$tmpbin/kwok" "$bin/kwok"
  rmdir "$tmpbin"
fi

complete
log "done: $bin"
echo "$bin"
