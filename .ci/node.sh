#!/usr/bin/env bash
# A real single node for the tests (idempotent; quiet when everything is cached).
#
# kubelet and kube-scheduler v1.20.2 are built from the same Debian bookworm source package
# `kubernetes` as kube-apiserver (.ci/kubernetes.sh: same reflect2 fix, same Go), with the
# pause container's binary (build/pause/linux/pause.c, linked statically), and cached next to
# the API server:
#     ${DTH_CACHE:-$HOME/.cache/dth}/kubernetes/<source-version>/bin/{kubelet,kube-scheduler,pause}
# The runtime comes from Debian: containerd 1.6 (CRI), runc, the CNI plugins, buildah (images
# without a daemon), debootstrap (the stand-in base image), conntrack, iptables and busybox-static (a
# tiny image for the node's own tests).
# dth.devtools.node finds all of them.
set -euo pipefail
cd "$(dirname "$0")/.."

cache_root="${DTH_CACHE:-$HOME/.cache/dth}/kubernetes"
runtime_packages=(containerd runc containernetworking-plugins buildah debootstrap conntrack iptables busybox-static)
build_deps=(golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev gcc libc6-dev)
export DEBIAN_FRONTEND=noninteractive

script_start=$SECONDS
step_start=$SECONDS
say() { echo "node: $*"; }
took() {
    say "$1 took $((SECONDS - step_start)) s"
    step_start=$SECONDS
}

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
        echo "node: failed: $*" >&2
        tail -n 100 "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        quietly apt-get -o DPkg::Lock::Timeout=900 update
        apt_updated=1
    fi
}

apt_install() {
    apt_update
    quietly apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends "$@"
}

source_version() {
    apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/ { print $2 }' | sort -V | tail -n 1 || true
}

have_node() {
    [ -x "$1/kubelet" ] && [ -x "$1/kube-scheduler" ] && [ -x "$1/pause" ]
}

# The runtime: containerd's packaged service is not used (the tests run their own).
missing=()
for program in containerd runc buildah debootstrap conntrack iptables busybox; do
    command -v "$program" >/dev/null 2>&1 || missing+=("$program")
done
[ -x /usr/lib/cni/bridge ] || missing+=(cni-bridge)
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${runtime_packages[@]}"
    took "installing ${runtime_packages[*]}"
fi

# .ci/kubernetes.sh has added the deb-src lines and built the API server.
bash .ci/kubernetes.sh
version=$(source_version)
if [ -z "$version" ]; then
    version=$(ls -1 "$cache_root" | sort -rV | head -n 1)
fi
bin="$cache_root/$version/bin"

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9

if ! have_node "$bin"; then
    say "building kubelet, kube-scheduler and pause from Debian source kubernetes $version"
    apt_install "${build_deps[@]}"
    took "installing build dependencies"
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/dth-node-build.XXXXXX")
    (cd "$scratch" && quietly apt-get source --download-only "kubernetes=$version")
    (cd "$scratch" && quietly dpkg-source -x kubernetes_*.dsc k8s)
    took "downloading and unpacking the source"

    # The same reflect2 fix as for the API server (.ci/kubernetes.sh says why).
    vendored="$scratch/k8s/vendor/github.com/modern-go/reflect2"
    debian_reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
    cp "$vendored/LICENSE" "$scratch/reflect2-LICENSE"
    rm -rf "$vendored"
    mkdir -p "$vendored"
    cp -rL "$debian_reflect2/." "$vendored/"
    cp "$scratch/reflect2-LICENSE" "$vendored/LICENSE"

    # pause: one static C file; the version string is the source's own.
    pause_version=$(awk -F' *[?:]?= *' '/^TAG/ { print $2; exit }' "$scratch/k8s/build/pause/Makefile")
    quietly gcc -Os -Wall -Werror -static -DVERSION="v${pause_version:-unknown}" \
        -o "$scratch/pause" "$scratch/k8s/build/pause/linux/pause.c"
    took "compiling pause"

    (cd "$scratch/k8s" && quietly env -u GOFLAGS GOPROXY=off GOCACHE="$scratch/gocache" \
        make WHAT="cmd/kubelet cmd/kube-scheduler")
    took "compiling kubelet and kube-scheduler"

    mkdir -p "$bin"
    for program in kubelet kube-scheduler; do
        install -m 0755 "$scratch/k8s/_output/bin/$program" "$bin/.$program.new"
        mv "$bin/.$program.new" "$bin/$program"
    done
    install -m 0755 "$scratch/pause" "$bin/.pause.new"
    mv "$bin/.pause.new" "$bin/pause"
    say "built $("$bin/kubelet" --version)"
    rm -rf "$scratch"
    scratch=""
    took "caching the binaries"
fi

if [ $((SECONDS - script_start)) -gt 1 ]; then
    say "ready in $((SECONDS - script_start)) s: $bin"
fi
