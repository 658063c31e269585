#!/usr/bin/env bash
# The S3-compatible server the object-storage tests start as their own process on loopback:
# moto's server, from PyPI, in a virtualenv under ~/.cache (never a system-wide install).
#
#   scripts/s3-server.sh install        install it when missing (what scripts/test.sh runs)
#   scripts/s3-server.sh run PORT       run it in the foreground on 127.0.0.1:PORT
#
# The tests find it at $WEFT_S3_SERVER, default ~/.cache/weft-moto/bin/moto_server.
set -euo pipefail
MOTO_VERSION=5.2.6
venv="${WEFT_MOTO_VENV:-$HOME/.cache/weft-moto}"

install() {
    if [ -x "$venv/bin/moto_server" ] && "$venv/bin/pip" show moto 2>/dev/null | grep -qx "Version: $MOTO_VERSION"; then
        return
    fi
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        echo "s3-server.sh: installing Debian packages: python3-venv" >&2
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
    fi
    echo "s3-server.sh: installing moto[server]==$MOTO_VERSION into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

case "${1:-install}" in
    install) install ;;
    run)
        install
        exec "$venv/bin/moto_server" -H 127.0.0.1 -p "${2:?port}"
        ;;
    *)
        echo "usage: $0 install | run PORT" >&2
        exit 2
        ;;
esac
