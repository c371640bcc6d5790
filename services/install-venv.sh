#!/bin/sh
# Installs socketlab's Python side in an image stage (runtime and netkit alike):
# a venv at /opt/socketlab with the wheels the builder stage made in $1 (no
# network), and the `socketlab` and `lab-chat` commands. The package itself is
# copied in later, so a code change does not redo this layer.
set -eu
wheels=$1
built_by=$(cat "$wheels/python-version")
runs=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$built_by" != "$runs" ]; then
  echo "install-venv: wheels were built for Python $built_by but this image runs $runs" >&2
  exit 1
fi
python3 -m venv /opt/socketlab
/opt/socketlab/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
    --find-links "$wheels" -r "$wheels/requirements.txt"
/opt/socketlab/bin/pip check
printf '#!/bin/sh\nexec /opt/socketlab/bin/python3 -m socketlab "$@"\n' > /opt/socketlab/bin/socketlab
printf '#!/bin/sh\nexec /opt/socketlab/bin/python3 -m socketlab chat "$@"\n' > /opt/socketlab/bin/lab-chat
chmod 0755 /opt/socketlab/bin/socketlab /opt/socketlab/bin/lab-chat
