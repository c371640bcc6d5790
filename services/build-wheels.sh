#!/bin/sh
# Builds every wheel the images install, in the builder stage, with the Python
# the images run (the same base image, or the same Debian release's python3).
# $1 holds what the host downloaded (lab/images.py: sdists of every pinned
# requirement, pure wheels of the pinned build tools, the lock files); $2 gets
# runtime/ and netkit/, each a wheel folder with its requirements.txt.
# Offline: pip --no-index; every requirement is built from its sdist.
set -eu
sources=$1
out=$2
pip_offline="--no-index --no-cache-dir --disable-pip-version-check --find-links $sources"
python3 -m venv /opt/build
/opt/build/bin/pip install --quiet $pip_offline -r "$sources/requirements-build.txt"
build_set() {
  name=$1
  shift
  mkdir -p "$out/$name"
  : > "$out/$name/requirements.txt"
  for lock in "$@"; do
    cat "$sources/$lock" >> "$out/$name/requirements.txt"
  done
  # --no-binary :all: so nothing downloaded as a wheel can slip into an image;
  # the pinned build tools are already in this venv (no build isolation).
  /opt/build/bin/pip wheel --quiet $pip_offline --no-deps --no-binary :all: \
      --no-build-isolation --use-pep517 --wheel-dir "$out/$name" -r "$out/$name/requirements.txt"
  python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' > "$out/$name/python-version"
}
build_set runtime requirements.txt
build_set netkit requirements.txt requirements-netkit.txt
ls "$out"/runtime "$out"/netkit
