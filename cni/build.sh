#!/bin/sh
# Builds the CNI plugin launcher for real nodes: cni/tenc-cni.c as one static
# executable (libc and libm linked in), so /opt/cni/bin/tenc runs on any Linux host
# without Node.js, npm or shared libraries of a particular distribution.
#   cni/build.sh [OUT]      default OUT: build/cni/tenc-cni
# Needs a C compiler and the static libc (Debian: libc6-dev). Exit 0 ok, 1 failure.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../build/cni/tenc-cni}
cc=${CC:-cc}
mkdir -p "$(dirname "$out")"
$cc -std=c11 -O2 -Wall -Wextra -Werror -static -s -o "$out.tmp" "$here/tenc-cni.c" -lm
mv -f "$out.tmp" "$out"
