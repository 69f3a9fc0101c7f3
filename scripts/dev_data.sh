#!/usr/bin/env bash
# The real-photo inputs of this repository's development setup, at the paths the shipped configs read:
#   data/realfaces            competition layout: 400 people (+ 200 eval people), masks painted on real faces
#   data/utkextra_painted     competition layout: 800 more people with masks painted on, no eval set
#   data/realmask-dev         real mask photos: train.csv and holdout.csv manifests (path, mask, group)
#   data/utkface-extra        2,400 more faces as a manifest (gender, age in years)
#   weights/                  pretrained trunks as safetensors files (timm state dicts)
# The folders are made by SHARED/tools/make_realfaces.py from SHARED/data/utkface-dev and utkface-extra; the rest are
# links into SHARED. Outside the development setup, put your own data at these paths (docs/guides/real-photos.md).
#   bash scripts/dev_data.sh                 # makes what is missing, leaves the rest
#   SHARED=/mnt/shared bash scripts/dev_data.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=$(realpath "${SHARED:-../shared}")
PYTHON=${PYTHON:-python}
mkdir -p data
link() { [ -e "$2" ] || ln -s "$1" "$2"; }
link "$SHARED/weights" weights
link "$SHARED/data/realmask-dev" data/realmask-dev
link "$SHARED/data/utkface-extra" data/utkface-extra
[ -d data/realfaces ] || "$PYTHON" "$SHARED/tools/make_realfaces.py" --faces "$SHARED/data/utkface-dev" \
    --out data/realfaces --people 400 --eval-people 200
[ -d data/utkextra_painted ] || "$PYTHON" "$SHARED/tools/make_realfaces.py" --faces "$SHARED/data/utkface-extra/faces" \
    --out data/utkextra_painted --people 800 --eval-people 0 --seed 7
echo "ready: data/realfaces data/utkextra_painted data/realmask-dev data/utkface-extra weights"
