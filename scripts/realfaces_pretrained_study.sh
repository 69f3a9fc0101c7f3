#!/usr/bin/env bash
# Fine-tuning pretrained trunks on real photos (docs/studies/pretrained-trunks.md): the multi-source data, fold,
# seed and scoring of realfaces_multisource_cpu.yaml for every row; only the trunk and how it is fine-tuned change.
#   scratch      configs/realfaces_multisource_cpu.yaml: resnet18 from scratch, 10 epochs, lr 2e-3 (the baseline)
#   lite0_plain  that recipe with nothing changed but the trunk: ImageNet EfficientNet-Lite0, its normalisation
#                (auto), lr 1e-3; no freezing, one learning rate (the untuned first try)
#   lite0        configs/realfaces_pretrained_cpu.yaml: Lite0, 6 epochs, the first with the trunk frozen, the trunk
#                at half the heads' learning rate
#   freeze0 freeze2   lite0 with 0 / 2 frozen epochs
#   scale1 scale02    lite0 with the trunk at the heads' learning rate / a fifth of it
#   ld08         lite0 with layer-wise decay 0.8 (the stem at about 0.03 of the last stage)
#   size160      lite0 at 160x120 instead of 128x96
#   lite2        lite0's recipe on the ImageNet EfficientNet-Lite2 trunk
#   faceres      lite0's recipe on the face-trained MobileNetV1 (identity, then age and gender): its file wants
#                ImageNet's mean/std, which timm's pretrained_cfg for mobilenetv1_100 does not say, so they are set;
#                its batch norms are folded into the convolutions (identity statistics), so they stay as loaded
#                (train.freeze_bn), and no epoch is frozen: its pooled features are ~40x smaller than Lite0's, so
#                heads alone barely move in one epoch
#   ens          the faceres and lite0 runs as one ensemble under hflip TTA (nothing trained: run both rows first)
#   distil       lite0's recipe distilled from that ensemble (train.distill defaults: alpha 0.7, T 2, hflip TTA):
#                one Lite0 at one model's cost of inference
#   mask_lite0   a mask specialist: configs/realmask_only_cpu.yaml (the real mask photos alone, 10 epochs) on the
#                pretrained Lite0 with lite0's fine-tuning settings; scored on the held-out real masks only (not a
#                default row; `predict --ckpt runs/pt_lite0/1 runs/pt_mask_lite0/1` merges it into a recipe run)
# Each run is scored on the 1400 eval photos (out/<prefix>_<row>) and its mask head on the held-out real mask photos
# (out/<prefix>_<row>_realmask); `multitask compare` gives every paired difference against the first row with its
# 95 % interval, resampling people (eval) or source images (real masks). Train times go to out/<prefix>_times.txt.
#
#   python ../shared/tools/make_realfaces.py --faces ../shared/data/utkface-dev --out data/realfaces \
#       --people 400 --eval-people 200
#   python ../shared/tools/make_realfaces.py --faces ../shared/data/utkface-extra/faces --out data/utkextra_painted \
#       --people 800 --eval-people 0 --seed 7
#   ROWS="scratch lite0" bash scripts/realfaces_pretrained_study.sh
#   SEED=1 PREFIX=pt_s1 ROWS="scratch lite0" bash scripts/realfaces_pretrained_study.sh   # another seed (and fold)
set -euo pipefail
DATA=${DATA:-data/realfaces}
SHARED=${SHARED:-../shared/data}
WEIGHTS=${WEIGHTS:-../shared/weights}
PAINTED=${PAINTED:-data/utkextra_painted}
PREFIX=${PREFIX:-pt}
SEED=${SEED:-}   # empty: each config's own seed; a seed also draws another validation fold
ROWS=${ROWS:-"scratch lite0_plain lite0 freeze0 freeze2 scale1 scale02 ld08 size160 lite2 faceres"}
SOURCES=("data.sources.competition.root=$DATA" "data.sources.realmask.path=$SHARED/realmask-dev/train.csv"
         "data.sources.utk_painted.root=$PAINTED")
LITE0=("model.pretrained=$WEIGHTS/tf_efficientnet_lite0.imagenet.safetensors")
RECIPE=(--config configs/realfaces_pretrained_cpu.yaml "${SOURCES[@]}" "${LITE0[@]}")

. scripts/study_lib.sh   # study_row, study_compare

for row in $ROWS; do
    case $row in
        scratch)     study_row $row --config configs/realfaces_multisource_cpu.yaml "${SOURCES[@]}" ;;
        lite0_plain) study_row $row --config configs/realfaces_multisource_cpu.yaml "${SOURCES[@]}" "${LITE0[@]}" \
                         model.backbone=tf_efficientnet_lite0 data.mean=auto data.std=auto train.lr=0.001 ;;
        lite0)       study_row $row "${RECIPE[@]}" ;;
        freeze0)     study_row $row "${RECIPE[@]}" train.freeze_trunk_epochs=0 ;;
        freeze2)     study_row $row "${RECIPE[@]}" train.freeze_trunk_epochs=2 ;;
        scale1)      study_row $row "${RECIPE[@]}" train.trunk_lr_scale=1.0 ;;
        scale02)     study_row $row "${RECIPE[@]}" train.trunk_lr_scale=0.2 ;;
        ld08)        study_row $row "${RECIPE[@]}" train.layer_decay=0.8 ;;
        size160)     study_row $row "${RECIPE[@]}" "data.image_size=[160,120]" ;;
        lite2)       study_row $row "${RECIPE[@]}" model.backbone=tf_efficientnet_lite2 \
                         "model.pretrained=$WEIGHTS/tf_efficientnet_lite2.imagenet.safetensors" ;;
        faceres)     study_row $row "${RECIPE[@]}" model.backbone=mobilenetv1_100 \
                         "model.pretrained=$WEIGHTS/mobilenetv1_100.faceres.safetensors" \
                         "data.mean=[0.485,0.456,0.406]" "data.std=[0.229,0.224,0.225]" train.freeze_bn=true \
                         train.freeze_trunk_epochs=0 ;;
        ens)         study_ensemble $row faceres lite0 ;;
        distil)      study_row $row "${RECIPE[@]}" \
                         "train.distill.teachers=[runs/${PREFIX}_faceres/1,runs/${PREFIX}_lite0/1]" ;;
        mask_lite0)  study_row $row --config configs/realmask_only_cpu.yaml \
                         "data.sources.realmask.path=$SHARED/realmask-dev/train.csv" "${LITE0[@]}" \
                         model.backbone=tf_efficientnet_lite0 data.mean=auto data.std=auto train.lr=0.001 \
                         train.trunk_lr_scale=0.5 train.freeze_trunk_epochs=1 ;;
        *) echo "unknown row $row" >&2; exit 2 ;;
    esac
done

study_compare $ROWS   # out/<prefix>_compare_{eval,realmask}
