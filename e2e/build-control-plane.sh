#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager and kwok from Go modules
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
wanted=(etcd kube-apiserver kube-controller-manager kwok)

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

# The wrapper module: k8s.io/kubernetes publishes go.mod with every staging
# module at v0.0.0, and a dependency's replace lines are ignored, so pin each
# staging module to the v0.x.y tag that matches the release.
mod="$cache/src/$key/wrapper"
if [ ! -f "$mod/.ready" ]; then
  rm -rf "$mod" && mkdir -p "$mod"
  (
    cd "$mod"
    go mod init phalanx.dev/e2e/controlplane >/dev/null 2>&1
    log "resolving k8s.io/kubernetes v$K8S_VERSION"
    upstream_mod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
    staging="v0.${K8S_VERSION#1.}"
    for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$upstream_mod"); do
      go mod edit -replace="$m=$m@$staging"
    done
    go mod edit -require="k8s.io/kubernetes@v$K8S_VERSION" -require="go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
    cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
    log "go mod tidy (downloads modules on the first run)"
    go mod tidy >&2
    touch .ready
  )
fi

minor=$(echo "$K8S_VERSION" | cut -d. -f2)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
(
  cd "$mod"
  if [ ! -x "$bin/etcd" ]; then
    log "building etcd v$ETCD_VERSION"
    go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$bin/etcd.tmp" "$bin/etcd"
  fi
  for cmd in kube-apiserver kube-controller-manager; do
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
