# Helpers shared by the setup scripts (sourced, not run). The sourcing script sets `prefix` first.
# shellcheck shell=bash

script_start=$SECONDS
step_start=$SECONDS
say() { echo "${prefix}: $*"; }
took() {
    say "$1 took $((SECONDS - step_start)) s"
    step_start=$SECONDS
}

# A scratch folder the script may set; removed on exit, whatever happens.
scratch=""
cleanup() {
    if [ -n "$scratch" ]; then
        rm -rf "$scratch"
    fi
}
trap cleanup EXIT

# Runs a command with its output in a log file, shown only when the command fails.
quietly() {
    local log
    log=$(mktemp)
    if ! "$@" >"$log" 2>&1; then
        echo "${prefix}: failed: $*" >&2
        tail -n 100 "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

export DEBIAN_FRONTEND=noninteractive
# Other setup steps (or a person) may hold the dpkg lock: wait for it rather than fail.
apt_get() { apt-get -o DPkg::Lock::Timeout=900 "$@"; }
apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        quietly apt_get update
        apt_updated=1
    fi
}
apt_install() {
    apt_update
    quietly apt_get install -y --no-install-recommends "$@"
}

# Says how long the whole script took, when it did anything worth saying.
say_ready() {
    if [ $((SECONDS - script_start)) -gt 1 ]; then
        say "ready in $((SECONDS - script_start)) s: $*"
    fi
}
