# Sourced by the check scripts: `pytool <command> <pip requirement>` makes
# <command> runnable, installing <requirement> from PyPI into a virtual
# environment under target/ when the command is missing. A venv keeps the
# system's Python untouched (Debian refuses pip installs into it) and the
# install repeatable; Debian's python3-venv is installed when it is missing.

pytools_venv="$(pwd)/target/pytools"

pytool() {
  local command="$1" requirement="$2"
  if command -v "$command" >/dev/null 2>&1; then
    return
  fi
  if [ ! -x "$pytools_venv/bin/$command" ]; then
    if [ ! -x "$pytools_venv/bin/pip" ]; then
      if ! python3 -m venv "$pytools_venv" >/dev/null 2>&1; then
        echo "installing python3-venv from Debian"
        local sudo_cmd=""
        [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends python3-venv python3-pip >/dev/null
        rm -rf "$pytools_venv"
        python3 -m venv "$pytools_venv"
      fi
    fi
    echo "installing $requirement from PyPI into target/pytools"
    "$pytools_venv/bin/pip" install --quiet --disable-pip-version-check "$requirement"
  fi
  export PATH="$pytools_venv/bin:$PATH"
}
