#!/bin/sh
# Installs the Debian packages named in "$@" that the image does not have yet.
#
# On the local bases (mmdebstrap, no registry) every package is there already,
# so nothing is installed and the build needs no network: lab/images.py runs
# it with --network none and a missing package fails here, loudly. On a base
# image from a registry the packages come from that image's own apt sources.
#
# --python-headers adds python3-dev when the python3 on PATH has no Python.h
# (Debian's python3; the python:3.x images ship their headers).
set -eu
missing=""
if [ "${1:-}" = "--python-headers" ]; then
  shift
  if ! python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    missing="python3-dev"
  fi
fi
for pkg in "$@"; do
  if ! dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
    missing="$missing $pkg"
  fi
done
if [ -z "$missing" ]; then
  exit 0
fi
echo "install-debs: installing$missing"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
rm -rf /var/lib/apt/lists/*
