#!/bin/sh
# The commands behind the Dockerfile's RUN lines, one function per step:
#   sh docker/build-steps.sh STEP [ARGUMENT]
# tests/test_dockerfile.py runs the same RUN lines, in the same order, outside Docker.
set -eu

# The PyInstaller version of image builds. The test extra in pyproject.toml must allow it.
PYINSTALLER_VERSION=6.22.3
# The user of the python image; deploy/kubernetes.yaml runs the container as this uid.
APP_UID=10001

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore

# Builder stage, before the source is copied: create .venv in the working directory, where
# scripts/build-binary looks for its interpreter, and install PyInstaller into it. This layer
# stays cached while only the source changes.
install_tools() {
    python -m venv .venv
    .venv/bin/python -m pip install "pyinstaller==$PYINSTALLER_VERSION"
}

# Builder stage, with the source in the working directory: install fwatchdog and build
# dist/fwatchdog. Then write wheels of fwatchdog and of the dependency versions inside the binary
# to dist/wheels, so the python stage installs the same versions without a package index.
build() {
    .venv/bin/python -m pip install .
    scripts/build-binary
    .venv/bin/python -m pip freeze --exclude fwatchdog >dist/constraints.txt
    .venv/bin/python -m pip wheel --constraint dist/constraints.txt --wheel-dir dist/wheels .
}

# Python stage: install fwatchdog from the wheels in $1 into the image's Python, then add the
# unprivileged user that runs it. When IMAGE_ROOT is set, groupadd and useradd edit the account
# files under that folder instead of /etc, so the test leaves the host's accounts alone.
install_runtime() {
    wheels=${1:?install_runtime needs the folder of wheels}
    python -m pip install --no-index --find-links "$wheels" fwatchdog
    if [ -n "${IMAGE_ROOT:-}" ]; then
        set -- --prefix "$IMAGE_ROOT"
    else
        set --
    fi
    groupadd "$@" --gid "$APP_UID" fwatchdog
    useradd "$@" --uid "$APP_UID" --gid "$APP_UID" --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --no-log-init fwatchdog
}

case ${1:-} in
install_tools) install_tools ;;
build) build ;;
install_runtime) install_runtime "${2:-}" ;;
*)
    echo "build-steps.sh: unknown step '${1:-}'; expected install_tools, build or install_runtime" >&2
    exit 2
    ;;
esac
