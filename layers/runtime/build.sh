#!/usr/bin/env bash
# Build the runtime layer folder: onnxruntime, numpy, tokenizers and ferry.runtime for Lambda's python3.12.
# usage: layers/runtime/build.sh [x86_64|arm64] [OUT]   (OUT default: build/layers/runtime-<arch>)
# SAM zips the folder; Lambda unpacks it into /opt, so packages go under python/.
set -euo pipefail
arch=${1:-x86_64}
case "$arch" in
  x86_64) machine=x86_64 ;;
  arm64) machine=aarch64 ;;
  *) echo "layers/runtime/build.sh: unknown arch '$arch' (x86_64 or arm64)" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${2:-$root/build/layers/runtime-$arch}
python=${VENV_PYTHON:-$root/.venv/bin/python}
staging="$out.tmp.$$"
trap 'rm -rf "$staging"' EXIT
rm -rf "$staging" && mkdir -p "$staging/python"
platform=(--platform "manylinux2014_$machine" --platform "manylinux_2_28_$machine" --python-version 3.12
          --implementation cp --only-binary=:all:)
"$python" -m pip install --quiet --disable-pip-version-check --target "$staging/python" "${platform[@]}" \
  -r "$here/requirements.txt"
# tokenizers without huggingface-hub: the hub client only downloads, which Lambda never does.
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --target "$staging/python" "${platform[@]}" \
  "tokenizers==0.22.2"
mkdir -p "$staging/python/ferry"
cp "$root/src/ferry/__init__.py" "$root/src/ferry/exceptions.py" "$root/src/ferry/metrics.py" "$staging/python/ferry/"
cp -r "$root/src/ferry/runtime" "$staging/python/ferry/runtime"
find "$staging" -name __pycache__ -type d -prune -exec rm -rf {} +
rm -rf "$staging/python/bin"
rm -rf "$out" && mv "$staging" "$out"
echo "runtime layer: $out ($(du -sb "$out" | cut -f1) bytes unzipped)"
