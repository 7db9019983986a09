# shellcheck shell=bash
# go_wrapper_module DIR K8S_VERSION REQUIRE... IMPORT...: creates (once) a Go
# module in DIR that requires each REQUIRE (module@version) and imports each
# IMPORT (package) in a tools file. k8s.io/kubernetes publishes go.mod with
# every staging module at v0.0.0, and a dependency's replace lines are ignored,
# so each staging module is pinned to the v0.x.y tag matching K8S_VERSION (or,
# where the module proxy lacks that tag, the nearest patch of the same minor
# it has: the modules a scheduler build imports are API-stable within a minor).
go_wrapper_module() {
  local dir=$1 k8s=$2
  shift 2
  [ -f "$dir/.ready" ] && return 0
  rm -rf "$dir" && mkdir -p "$dir"
  (
    cd "$dir"
    go mod init phalanx.dev/e2e/wrapper >/dev/null 2>&1
    local upstream_mod staging m arg imports=""
    upstream_mod=$(go mod download -json "k8s.io/kubernetes@v$k8s" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
    staging="v0.${k8s#1.}"
    for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$upstream_mod"); do
      go mod edit -replace="$m=$m@$(available_patch "$m" "$staging")"
    done
    go mod edit -replace="k8s.io/kubernetes=k8s.io/kubernetes@v$k8s"
    for arg in "$@"; do
      case "$arg" in
        *@*) go mod edit -require="$arg" ;;
        *) imports+=$'\t_ "'"$arg"$'"\n' ;;
      esac
    done
    printf '//go:build tools\n\npackage tools\n\nimport (\n%s)\n' "$imports" >tools.go
    go mod tidy >&2
    touch .ready
  )
}

# available_patch MODULE v0.X.Y: v0.X.Y if the module proxy has it, else the
# nearest patch of v0.X it has (above first, then below).
available_patch() {
  local m=$1 want=$2 minor=${2%.*} patch=${2##*.} p
  for p in "$patch" $((patch + 1)) $((patch + 2)) $(seq $((patch - 1)) -1 0); do
    if go mod download "$m@$minor.$p" >/dev/null 2>&1; then
      [ "$p" = "$patch" ] || echo "[go-wrapper] $m: no $want on the module proxy, using $minor.$p" >&2
      echo "$minor.$p"
      return 0
    fi
  done
  echo "[go-wrapper] $m: no $minor.x on the module proxy" >&2
  return 1
}
