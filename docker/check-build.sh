#!/usr/bin/env bash
# Builds both images without Docker and runs their entrypoints, on machines that cannot pull python:slim.
#
# buildah (Debian package, as root, no daemon: --isolation chroot, vfs storage in a temporary folder) builds
# docker/operator.Dockerfile and docker/engine.Dockerfile with PYTHON_IMAGE replaced by a stand-in: Debian
# bookworm made by debootstrap, with Debian's python3 (3.11) as `python`. Everything else is the real build:
# the lock installed with hashes from PyPI, the project, the user, skopeo from Debian. Then, as the image's
# user: the operator's --help and its template paths, and `dth <command> --help` for every command the plugin
# templates give the engine image. Needs: apt-get install buildah debootstrap; PyPI and Debian's mirror.
# Takes about 5 minutes on 2 cores. Nothing is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

for program in buildah debootstrap; do
    command -v "$program" >/dev/null || { echo "check-build: $program is not installed (apt-get install $program)" >&2; exit 2; }
done
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d "${TMPDIR:-/tmp}/dth-check-build.XXXXXX")
cleanup() {
    buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs rm --all >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
b() { buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"; }

echo "check-build: debootstrap bookworm with python3"
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
mkdir "$work/base"
tar -C "$work/rootfs" -cf "$work/base/rootfs.tar" .
printf 'FROM scratch\nADD rootfs.tar /\nENV LANG=C.UTF-8\nCMD ["python3"]\n' >"$work/base/Containerfile"
b bud --isolation chroot -q -t localhost/python-standin "$work/base" >/dev/null

# The host's CA bundle, for machines whose HTTPS goes through an inspecting proxy (only while building).
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$work/pip.conf"
build_args=(--isolation chroot --build-arg PYTHON_IMAGE=localhost/python-standin
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro -v "$work/pip.conf:/etc/pip.conf:ro")
for image in operator engine; do
    echo "check-build: building docker/$image.Dockerfile"
    b bud "${build_args[@]}" -f "docker/$image.Dockerfile" -t "localhost/dth-$image:check" . >"$work/$image.log" 2>&1 ||
        { tail -40 "$work/$image.log" >&2; exit 1; }
done

run_in() {
    local image=$1 container
    shift
    container=$(b from "$image")
    b run --isolation chroot "$container" -- "$@"
    b rm "$container" >/dev/null
}
run_in localhost/dth-operator:check sh -c 'test "$(id -u)" = 10001'
run_in localhost/dth-operator:check python -m dth_operator --help >/dev/null
run_in localhost/dth-operator:check python -c '
from dth_operator.settings import OperatorSettings
s = OperatorSettings.from_environment()
assert s.s3_template.is_file() and s.image_template.is_file(), (s.s3_template, s.image_template)
import dth_operator.handlers'
run_in localhost/dth-engine:check sh -c 'test "$(id -u)" = 10001 && test "$TMPDIR" = /tmp && skopeo --version >/dev/null'
for command in "s3 finder" "s3 worker" "image sync-env"; do
    # shellcheck disable=SC2086 # the command's words
    run_in localhost/dth-engine:check dth $command --help >/dev/null
done
[ "$(b inspect --format '{{.OCIv1.Config.Entrypoint}}' localhost/dth-engine:check)" = "[dth]" ]
[ "$(b inspect --format '{{.OCIv1.Config.Entrypoint}}' localhost/dth-operator:check)" = "[python -m dth_operator]" ]
echo "check-build: both images build, run as user 10001, and their entrypoints answer"
