#!/bin/sh
# Install HyperLearn from a source folder into a new virtual environment: the image's one install step
# (docker/Dockerfile runs it), kept in a script so that tests/docker/test_install.py can run the same lines in a
# clean venv on a machine without Docker.
#
#   docker/install.sh SOURCE VENV [EXTRAS] [PIP_OPTION...]
#
# SOURCE holds pyproject.toml and the package folders; VENV must not exist yet; EXTRAS defaults to "gpu" (CuPy
# for CUDA 13); PIP_OPTION... go to `pip install` as they are (the test passes --no-deps). The install is a
# regular wheel install, not an editable one.
set -eu

if [ "$#" -lt 2 ]; then
    echo "usage: $0 SOURCE VENV [EXTRAS] [PIP_OPTION...]" >&2
    exit 2
fi
source_dir=$1
venv=$2
extras=${3:-gpu}
shift $(( $# < 3 ? $# : 3 ))

if [ -e "$venv" ]; then
    echo "$0: $venv already exists; the install goes into a new virtual environment" >&2
    exit 2
fi

python3.11 -m venv "$venv"
"$venv/bin/python" -m pip install --no-cache-dir "$@" "$source_dir[$extras]"
