#!/usr/bin/env bash
# A real single node for the tests (idempotent; quiet when everything is cached).
#
# - kubelet, kube-scheduler and pause: built with the API server, from the same Debian source, in
#   the same compile (.ci/kubernetes.sh --node), cached next to it.
# - The runtime, from Debian: containerd 1.6 (CRI), runc, the CNI plugins, buildah (images without a
#   daemon), debootstrap (the stand-in base image), conntrack, iptables and busybox-static (a tiny
#   image for the node's own tests). containerd's packaged service is not used: the tests run their own.
# - The operator's and the engines' images: the Dockerfiles as they are, built with buildah on a
#   debootstrap base (python -m dth.devtools.image_build), cached by content in
#   ${DTH_CACHE:-$HOME/.cache/dth}/images. A change to the code rebuilds only the steps from `COPY engines` on.
# dth.devtools.node and dth.devtools.image_build find all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=node
# shellcheck source=.ci/lib.sh
. .ci/lib.sh

runtime_packages=(containerd runc containernetworking-plugins buildah debootstrap conntrack iptables busybox-static)
missing=()
for program in containerd runc buildah debootstrap conntrack iptables busybox; do
    command -v "$program" >/dev/null 2>&1 || missing+=("$program")
done
[ -x /usr/lib/cni/bridge ] || missing+=(cni-bridge)
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${runtime_packages[@]}"
    took "installing ${runtime_packages[*]}"
fi

bash .ci/kubernetes.sh --node

# Prints how long each image took to build, or nothing when all were cached.
built=$(python3 -m dth.devtools.image_build |
    python3 -c 'import json, sys; print(", ".join(f"{k} {v:.0f} s" for k, v in json.load(sys.stdin)["seconds"].items()))')
if [ -n "$built" ]; then
    say "images built: $built"
fi
say_ready "the node's programs and images"
