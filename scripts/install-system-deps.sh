#!/usr/bin/env bash
# Debian packages bobench's tests and local stack use: prometheus (metrics tests, `make up`),
# chromium (the report is opened headless in a test) and dataset-fashion-mnist (the bundled
# `fashion_mnist` dataset of the offline demo, MIT) and labelme-examples (the bundled `labelme_coco`
# detection set with instance masks, GPL-3). Installed only when missing and we are root;
# otherwise we say what is missing and the tests that need it skip with that reason.
set -euo pipefail
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
[ -f /usr/share/doc/labelme-examples/examples/instance_segmentation/data_dataset_coco/annotations.json ] \
  || missing+=(labelme-examples)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "note: not root, so not installing Debian packages: ${missing[*]} (apt-get install ${missing[*]})" >&2
  case " ${missing[*]} " in *" dataset-fashion-mnist "*)
    echo "note: without root, 'apt-get download dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb DIR'" \
      "and the dataset ref option path: DIR/usr/share/datasets/fashion-mnist give the same files" >&2 ;;
  esac
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: no apt-get; please install ${missing[*]} yourself" >&2
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
