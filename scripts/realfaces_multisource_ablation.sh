#!/usr/bin/env bash
# Several data sources on real photos (docs/studies/multi-source.md): the same data, fold, seed and
# budget for every row; only the sources change.
#   alone        configs/realfaces_cpu.yaml: the competition-layout photos only (face crop, years age head)
#   realmask     + real mask photos (realmask-dev/train.csv, mask labels only, not cropped again)
#   utk          + 2,400 other real faces with gender and age in years, a quarter of every epoch, face crop
#   utk_whole    the same faces taken whole (aligned crops already): does their framing need the face crop?
#   both_manifest  realmask and utk_extra (the manifest, face crop) together
#   realmask_bal + realmask drawn class-balanced by mask, with its own stronger augmentation
#   both         configs/realfaces_multisource_cpu.yaml: realmask_bal + 800 of the extra faces with masks painted on
#                (a second competition-layout source, 0.4 of every epoch, training only): the extra ages and genders
#                seen masked, as the eval photos are
#   both_rmaug   both, with realmask a quarter of every epoch (its coarse dropout 0.3 and random resized crops on
#                top of its own augmentation) and the painted faces 0.3: the epoch's length stays the same (not a
#                default row: ROWS="both both_rmaug")
# Each run is scored on the 1400 eval photos (out/<prefix>_<row>) and its mask head on the held-out real mask
# photos (out/<prefix>_<row>_realmask: realmask-dev/holdout.csv, split from train.csv by source image); `multitask
# compare` gives every paired difference against `alone` with its 95 % interval, resampling people.
#
#   python ../shared/tools/make_realfaces.py --faces ../shared/data/utkface-dev --out data/realfaces \
#       --people 400 --eval-people 200
#   python ../shared/tools/make_realfaces.py --faces ../shared/data/utkface-extra/faces --out data/utkextra_painted \
#       --people 800 --eval-people 0 --seed 7
#   bash scripts/realfaces_multisource_ablation.sh                # ROWS="alone both" to run some rows only
#   SEED=1 PREFIX=ms_s1 ROWS="both both_rmaug" bash scripts/realfaces_multisource_ablation.sh   # another seed
set -euo pipefail
DATA=${DATA:-data/realfaces}
SHARED=${SHARED:-../shared/data}
PAINTED=${PAINTED:-data/utkextra_painted}
PREFIX=${PREFIX:-ms}
SEED=${SEED:-}   # empty: each config's own seed; a seed also draws another validation fold
ROWS=${ROWS:-"alone realmask realmask_bal utk utk_whole both_manifest both"}
COMPETITION=(data.sources.competition.kind=competition "data.sources.competition.root=$DATA"
             data.sources.competition.crop=face)
REALMASK=(data.sources.realmask.kind=manifest "data.sources.realmask.path=$SHARED/realmask-dev/train.csv"
          data.sources.realmask.crop=none "data.sources.realmask.heads=[mask]")
UTK=(data.sources.utk_extra.kind=manifest "data.sources.utk_extra.path=$SHARED/utkface-extra/manifest.csv"
     "data.sources.utk_extra.heads=[gender,age]" data.sources.utk_extra.share=0.25)
BALANCED=(data.sources.realmask.balance=mask data.sources.realmask.augment.shift_scale_rotate=0.5
          data.sources.realmask.augment.color_jitter=0.5)

. scripts/study_lib.sh   # study_row, study_compare

for row in $ROWS; do
    case $row in
        alone)     study_row $row --config configs/realfaces_cpu.yaml "data.root=$DATA" ;;
        realmask)  study_row $row --config configs/realfaces_cpu.yaml "${COMPETITION[@]}" "${REALMASK[@]}" ;;
        realmask_bal) study_row $row --config configs/realfaces_cpu.yaml "${COMPETITION[@]}" "${REALMASK[@]}" \
                       "${BALANCED[@]}" ;;
        utk)       study_row $row --config configs/realfaces_cpu.yaml "${COMPETITION[@]}" "${UTK[@]}" \
                       data.sources.utk_extra.crop=face ;;
        utk_whole) study_row $row --config configs/realfaces_cpu.yaml "${COMPETITION[@]}" "${UTK[@]}" \
                       data.sources.utk_extra.crop=none ;;
        both_manifest) study_row $row --config configs/realfaces_cpu.yaml "${COMPETITION[@]}" "${REALMASK[@]}" \
                       "${UTK[@]}" data.sources.utk_extra.crop=face ;;
        both)      study_row $row --config configs/realfaces_multisource_cpu.yaml "data.sources.competition.root=$DATA" \
                       "data.sources.realmask.path=$SHARED/realmask-dev/train.csv" \
                       "data.sources.utk_painted.root=$PAINTED" ;;
        both_rmaug) study_row $row --config configs/realfaces_multisource_cpu.yaml "data.sources.competition.root=$DATA" \
                       "data.sources.realmask.path=$SHARED/realmask-dev/train.csv" \
                       "data.sources.utk_painted.root=$PAINTED" data.sources.realmask.share=0.25 \
                       data.sources.utk_painted.share=0.3 data.sources.realmask.augment.coarse_dropout=0.3 \
                       data.sources.realmask.augment.random_resized_crop=true ;;
        *) echo "unknown row $row" >&2; exit 2 ;;
    esac
done

study_compare $ROWS   # out/<prefix>_compare_{eval,realmask}
