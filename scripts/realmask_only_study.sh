#!/usr/bin/env bash
# What a mask specialist learns from the real mask photos alone (docs/studies/multi-source.md):
# configs/realmask_only_cpu.yaml (mask head only, realmask-dev/train.csv drawn class-balanced, 10 epochs) and one lever
# at a time on it. Each row is scored on its own validation fold (val/composite/f1, in the run's metrics.csv)
# and on the 192 held-out real mask photos (out/<prefix>_<row>: realmask-dev/holdout.csv).
#   base    the config as shipped
#   e30     30 epochs instead of 10
#   mix     mixup 0.2 / cutmix 1.0 on half the batches
#   ema     weights averaged (EMA, decay 0.99)
#   r10t    a smaller trunk (resnet10t)
#   aug     + coarse dropout 0.3 and random resized crops on the real mask photos
#   f5      the config as shipped, one model per fold (--folds all), predicted as their 5-model ensemble (not a
#           default row: 5 trainings)
#   mstrunk the trunk of a multi-source run as its pretrained weights (model.pretrained: a multitask checkpoint;
#           TRUNK names it): the one pretrained trunk there is offline (not a default row). At seed 1 the
#           multi-source run held out this row's 171 validation photos too (checked in their oof.csv files); at
#           another seed, compare them before trusting this row's validation score
#   bash scripts/realmask_only_study.sh                 # ROWS="base aug" to run some rows only
#   SEED=1 PREFIX=rmo_s1 ROWS="base mstrunk" TRUNK=runs/ms_s1_both/1/best.pt bash scripts/realmask_only_study.sh
set -euo pipefail
SHARED=${SHARED:-../shared/data}
PREFIX=${PREFIX:-rmo}
ROWS=${ROWS:-"base e30 mix ema r10t aug"}
SEED=${SEED:-}     # empty: the config's seed (42); a seed also draws another validation fold
TRUNK=${TRUNK:-runs/ms_both/1/best.pt}
for row in $ROWS; do
    flags=()
    case $row in
        base) levers=() ;;
        e30)  levers=(train.epochs=30) ;;
        mix)  levers=(train.mixup=0.2 train.cutmix=1.0) ;;
        ema)  levers=(train.ema.enabled=true train.ema.decay=0.99) ;;
        r10t) levers=(model.backbone=resnet10t) ;;
        aug)  levers=(data.sources.realmask.augment.coarse_dropout=0.3
                      data.sources.realmask.augment.random_resized_crop=true) ;;
        mstrunk) levers=("model.pretrained=$TRUNK") ;;
        f5)   levers=(); flags=(--folds all) ;;
        *) echo "unknown row $row" >&2; exit 2 ;;
    esac
    # oof.csv, not best.pt: a --folds all run has no best.pt of its own, and writes its oof.csv once every fold is done
    if [ ! -f "runs/${PREFIX}_$row/1/oof.csv" ]; then
        /usr/bin/time -f "$row: trained in %e s" multitask train --config configs/realmask_only_cpu.yaml "${flags[@]}" \
            "data.sources.realmask.path=$SHARED/realmask-dev/train.csv" "${levers[@]}" ${SEED:+"seed=$SEED"} \
            "name=${PREFIX}_$row"
    fi
    multitask predict --ckpt "runs/${PREFIX}_$row/1" --data "$SHARED/realmask-dev/holdout.csv" --out "out/${PREFIX}_$row"
done
