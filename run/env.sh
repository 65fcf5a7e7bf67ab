# Sourced by every script in run/: run inside the project's Python environment.
#
# Which environment: LTH_VENV if set; else the active virtual or conda environment, if the
# python3 on PATH is one; else the project's own .venv, which run/install.sh creates. Using our
# own venv means pip never touches a distribution's Python (PEP 668).
#
# After sourcing: LTH_ROOT (the checkout), LTH_VENV (the venv to create, or empty when an
# existing environment is used) and, once the venv exists, its bin/ first on PATH.
LTH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

lth_in_env() {   # is this Python (default: python3 on PATH) a virtual or conda environment?
    "${1:-python3}" -c 'import os, sys
sys.exit(sys.prefix == sys.base_prefix and not os.path.isdir(os.path.join(sys.prefix, "conda-meta")))' \
        2>/dev/null
}

if [ -z "${LTH_VENV:-}" ] && lth_in_env; then
    LTH_VENV=                                   # the user's own environment: use it as it is
else
    LTH_VENV=$(cd "$LTH_ROOT" && realpath -m "${LTH_VENV:-.venv}")
    if [ -x "$LTH_VENV/bin/python" ]; then
        export VIRTUAL_ENV=$LTH_VENV            # what `. .venv/bin/activate` does, minus the prompt
        case ":$PATH:" in *":$LTH_VENV/bin:"*) ;; *) export PATH=$LTH_VENV/bin:$PATH ;; esac
    fi
fi
