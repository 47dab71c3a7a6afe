#!/usr/bin/env bash
# Make Fashion-MNIST available: it is found by sparsebench under $SPARSEBENCH_DATA, ./data or
# /usr/share/datasets. When none holds it and apt can be used, install Debian's package.
set -u
for root in "${SPARSEBENCH_DATA:-}" ./data /usr/share/datasets; do
  [ -n "$root" ] || continue
  for sub in fashion_mnist fashion-mnist; do
    if [ -f "$root/$sub/train-images-idx3-ubyte.gz" ]; then exit 0; fi
  done
done
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  echo "Fashion-MNIST not found: installing Debian's dataset-fashion-mnist"
  if $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
     { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; then
    exit 0
  fi
fi
echo "warning: Fashion-MNIST is missing and could not be installed with apt." >&2
echo "  Put the four IDX .gz files in ./data/fashion_mnist/ (or \$SPARSEBENCH_DATA/fashion_mnist/)." >&2
exit 0
