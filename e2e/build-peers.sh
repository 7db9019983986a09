#!/usr/bin/env bash
# Builds the schedulers phalanx is benchmarked against, from Go modules, into
# the same cache as the control plane (keyed by version); only the throughput
# benchmark calls it, so CI never pays for it. Prints the directory that holds
# `kube-scheduler` (upstream, the control plane's version) and
# `coscheduling-scheduler` (scheduler-plugins' kube-scheduler with Coscheduling).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=go-wrapper.sh
source "$here/go-wrapper.sh"

cache=${PHALANX_CACHE:-$HOME/.cache/phalanx}
bin="$cache/bin/peers_k8s-${K8S_VERSION}_scheduler-plugins-${SCHEDULER_PLUGINS_VERSION}"
mkdir -p "$bin"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
start=$(date +%s)
log() { echo "[build-peers] $(( $(date +%s) - start ))s: $*" >&2; }

# build_in_wrapper OUTPUT K8S_VERSION REQUIRE PACKAGE: builds PACKAGE in a
# wrapper module that requires REQUIRE and pins the staging modules of K8S_VERSION.
build_in_wrapper() {
  local out=$1 k8s=$2 require=$3 pkg=$4 mod
  [ -x "$bin/$out" ] && return 0
  mod="$cache/src/peer-$out-$k8s/wrapper"
  log "preparing the wrapper module for $pkg ($require)"
  go_wrapper_module "$mod" "$k8s" "$require" "$pkg"
  log "building $out"
  local minor
  minor=$(echo "$k8s" | cut -d. -f2)
  (cd "$mod" && go build -trimpath \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$k8s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
    -o "$bin/$out.tmp" "$pkg")
  mv "$bin/$out.tmp" "$bin/$out"
}

# Upstream kube-scheduler is part of the control plane build (the agreement
# test runs it too).
[ -x "$bin/kube-scheduler" ] || cp "$("$here/build-control-plane.sh")/kube-scheduler" "$bin/kube-scheduler"
# scheduler-plugins' release is built against its own Kubernetes minor.
build_in_wrapper coscheduling-scheduler "$SCHEDULER_PLUGINS_K8S_VERSION" \
  "sigs.k8s.io/scheduler-plugins@v$SCHEDULER_PLUGINS_VERSION" sigs.k8s.io/scheduler-plugins/cmd/scheduler
log "done: $bin"
echo "$bin"
