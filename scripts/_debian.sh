# Sourced by scripts/test and scripts/run-example: what they need from a
# fresh Debian machine, whose own python3 is externally managed (PEP 668).
# Nothing is ever pip-installed into that python3: everything goes into a
# virtual environment the calling script owns.

# install_debian_packages PACKAGE...: apt-get installs them (as root, or
# through sudo).
install_debian_packages() {
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    if ! command -v apt-get >/dev/null; then
        echo "$0: not a Debian machine; install these first: $*" >&2
        exit 1
    fi
    echo "$0: installing Debian's $*" >&2
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "$@"
}

# need_commands COMMAND=PACKAGE...: installs each PACKAGE whose COMMAND is
# not on PATH.
need_commands() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null ||
            [[ " ${missing[*]} " == *" ${pair#*=} "* ]] ||
            missing+=("${pair#*=}")
    done
    if ((${#missing[@]})); then
        install_debian_packages "${missing[@]}"
    fi
}

# make_venv DIR: a virtual environment in DIR made by the python3 on PATH
# (3.10 or newer). One that works is kept (DIR/.made-by records the
# python3); it is made anew when broken, or when made by another python3.
make_venv() {
    local dir=$1 base made_by
    need_commands python3=python3
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
        echo "$0: $(command -v python3) is $(python3 -V 2>&1);" \
            "Python 3.10 or newer is needed" >&2
        exit 1
    fi
    base=$(python3 -c 'import sys; print(sys.executable, sys.version)')
    made_by=$(cat "$dir/.made-by" 2>/dev/null || echo "$base")
    if [ "$made_by" = "$base" ] &&
        "$dir/bin/python" -m pip --version >/dev/null 2>&1; then
        printf '%s\n' "$base" >"$dir/.made-by"
        return
    fi
    # Debian's python3 makes virtual environments only with python3-venv
    # (which brings ensurepip).
    python3 -c 'import ensurepip, venv' 2>/dev/null ||
        install_debian_packages python3-venv
    rm -rf "$dir"
    python3 -m venv "$dir"
    printf '%s\n' "$base" >"$dir/.made-by"
}
