#!/usr/bin/env bash
# Wheels for bench/gpu_check.py on the lent GPU machine, which has its own Python 3.12 and PyTorch, reaches no
# package index, and cannot take the project's .venv (the copy sent there is limited to 64 MiB).
#
#   bash bench/gpu_env.sh
#
# Downloads, for CPython 3.12 manylinux x86-64 and without dependencies, exactly the packages of
# bench/gpu_wheels.txt (what gpu_check imports that the machine's image lacks, pinned) into .whl/ (git-ignored).
# A package that publishes only a source archive is built here into a wheel, kept only if it is pure Python
# (py3-none-any: it then runs there); one that cannot be had is left out and named, and the gpu_check part that
# needs it reports "not available" there while the others run. Ends with a one-line summary; exit 1 if the wheels
# pass LIMIT_MIB (default 40) or leave the working tree no room in the 64 MiB carry (.whl/ is then left as it was).
# The device command that installs them there and runs the check: bench/RESULTS.md, "gpu_check".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
LIMIT_MIB=${LIMIT_MIB:-40}
CARRY_MIB=64
OUT=.whl
NEW=$(mktemp -d .whl.new.XXXXXX)
trap 'rm -rf "$NEW"' EXIT
pipq() { "$PY" -m pip --disable-pip-version-check -q "$@" 2>/dev/null; }
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_28_x86_64
          --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
missing=()
built=()
while read -r spec _; do
  [[ -z "$spec" || "$spec" == \#* ]] && continue
  if pipq download --no-deps "${PLATFORM[@]}" -d "$NEW" "$spec"; then
    continue
  fi
  # no wheel for that machine: build one from the source archive (sam2 without its optional CUDA extension)
  src=$(mktemp -d)
  if SAM2_BUILD_CUDA=0 pipq download --no-deps --no-build-isolation --no-binary=:all: -d "$src/sdist" "$spec" \
      && SAM2_BUILD_CUDA=0 pipq wheel --no-deps --no-build-isolation -w "$src/wheel" "$src"/sdist/* \
      && compgen -G "$src/wheel/*-py3-none-any.whl" >/dev/null; then
    mv "$src"/wheel/*-py3-none-any.whl "$NEW/"
    built+=("$spec")
  else
    missing+=("$spec")
  fi
  rm -rf "$src"
done < bench/gpu_wheels.txt

wheels_b=$(cat "$NEW"/*.whl 2>/dev/null | wc -c)
tree_b=$(git ls-files -z | xargs -0 cat 2>/dev/null | wc -c)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
n=$(compgen -G "$NEW/*.whl" | wc -l)
summary="$n wheels, $(mib "$wheels_b") MiB (limit $LIMIT_MIB MiB); with the working tree ($(mib "$tree_b") MiB) \
$(mib $((wheels_b + tree_b))) of the $CARRY_MIB MiB carry; built from source: ${built[*]:-none}; \
not available: ${missing[*]:-none}"
if [ "$wheels_b" -gt $((LIMIT_MIB * 1048576)) ] || [ $((wheels_b + tree_b)) -gt $((CARRY_MIB * 1048576)) ]; then
  echo "gpu_env: error: too large, $OUT/ left as it was: $summary" >&2
  exit 1
fi
rm -rf "$OUT"
mv "$NEW" "$OUT"
trap - EXIT
echo "gpu_env: wrote $OUT/: $summary"
