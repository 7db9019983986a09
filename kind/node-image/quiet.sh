# shellcheck shell=bash
# quiet_start NAME LOG: progress lines "[NAME] SECONDSs: ..." on stderr (log),
# and `quietly COMMAND...`, which sends the command's output to LOG and shows
# the end of LOG only if the command fails.
quiet_start() {
  quiet_name=$1 quiet_log=$2 quiet_began=$(date +%s)
  : >"$quiet_log"
}
log() { echo "[$quiet_name] $(($(date +%s) - quiet_began))s: $*" >&2; }
quietly() {
  if ! "$@" >>"$quiet_log" 2>&1; then
    log "failed: $* (log: $quiet_log)"
    tail -n 30 "$quiet_log" >&2
    return 1
  fi
}
