#!/bin/sh
# Installs socketlab's Python side in an image stage (runtime and netkit alike):
# a venv at /opt/socketlab with the host-built wheels in $1 (no network), and
# the `socketlab` and `lab-chat` commands. The package itself is copied in later,
# so a code change does not redo this layer.
set -eu
wheels=$1
python3 -m venv /opt/socketlab
/opt/socketlab/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
    --find-links "$wheels" -r "$wheels/requirements.txt"
printf '#!/bin/sh\nexec /opt/socketlab/bin/python3 -m socketlab "$@"\n' > /opt/socketlab/bin/socketlab
printf '#!/bin/sh\nexec /opt/socketlab/bin/python3 -m socketlab chat "$@"\n' > /opt/socketlab/bin/lab-chat
chmod 0755 /opt/socketlab/bin/socketlab /opt/socketlab/bin/lab-chat
