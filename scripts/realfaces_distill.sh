#!/usr/bin/env bash
# The distillation measurement of docs/studies/distillation.md: a 5-fold teacher of the real-photo recipe, the same
# student trained alone and distilled (out of fold, and in fold), all scored on the eval photos, then compared
# (paired bootstrap over people) and the inference speed of teacher vs student.
#   python ../shared/tools/make_realfaces.py --faces ../shared/data/utkface-dev --out data/realfaces \
#       --people 400 --eval-people 200
#   bash scripts/realfaces_distill.sh
# Runs one training at a time (about 6 minutes each on 2 cores): run nothing else meanwhile.
set -euo pipefail
CFG=configs/realfaces_cpu.yaml
GT=(--data data/realfaces --gt data/realfaces/eval/gt.csv)
# the teacher: fold 0 is the lone student itself (seed 42, fold 0), folds 1-4 the same recipe on the other folds
[ -d runs/ms_alone/1 ] || multitask train --config $CFG name=ms_alone
for f in 1 2 3 4; do
  [ -d runs/kd_teacher_f$f/1 ] || multitask train --config $CFG data.fold=$f name=kd_teacher_f$f
done
TEACHER=(runs/ms_alone/1 runs/kd_teacher_f1/1 runs/kd_teacher_f2/1 runs/kd_teacher_f3/1 runs/kd_teacher_f4/1)
multitask distill --teacher "${TEACHER[@]}" --config $CFG --name kd_oof train.distill.out_of_fold=true
multitask distill --teacher "${TEACHER[@]}" --config $CFG --name kd_infold            # in fold: the default
# the second seed (another fold split of the student) and the extra faces as unlabelled photos
[ -d runs/ms_alone_s1/1 ] || multitask train --config $CFG seed=1 name=ms_alone_s1
multitask distill --teacher "${TEACHER[@]}" --config $CFG --name kd_infold_s1 seed=1
multitask distill --teacher "${TEACHER[@]}" --config $CFG --name kd_infold_utk \
    --unlabelled ../shared/data/utkface-extra/manifest.csv
multitask distill --teacher "${TEACHER[@]}" --config $CFG --name kd_infold_utk_s1 seed=1 \
    --unlabelled ../shared/data/utkface-extra/manifest.csv
# alpha 0.9, tried after the rows above (both seeds)
multitask distill --teacher "${TEACHER[@]}" --config $CFG --name kd_infold_utk_s1_a09 seed=1 \
    --unlabelled ../shared/data/utkface-extra/manifest.csv train.distill.alpha=0.9
multitask distill --teacher "${TEACHER[@]}" --config $CFG --name kd_infold_utk_a09 \
    --unlabelled ../shared/data/utkface-extra/manifest.csv train.distill.alpha=0.9
multitask predict --ckpt "${TEACHER[@]}" --tta identity,hflip "${GT[@]}" --out out/kd_teacher
for run in ms_alone kd_oof kd_infold kd_infold_utk kd_infold_utk_a09 ms_alone_s1 kd_infold_s1 kd_infold_utk_s1 \
    kd_infold_utk_s1_a09; do
  multitask predict --ckpt runs/$run/1 "${GT[@]}" --out out/kd_$run
done
multitask compare out/kd_ms_alone/predictions.csv out/kd_kd_oof/predictions.csv out/kd_kd_infold/predictions.csv \
    out/kd_kd_infold_utk/predictions.csv out/kd_kd_infold_utk_a09/predictions.csv out/kd_teacher/predictions.csv \
    --names alone,distilled_oof,distilled_infold,distilled_infold_utk,distilled_infold_utk_a09,teacher \
    --out out/kd_compare
multitask compare out/kd_ms_alone_s1/predictions.csv out/kd_kd_infold_s1/predictions.csv \
    out/kd_kd_infold_utk_s1/predictions.csv out/kd_kd_infold_utk_s1_a09/predictions.csv \
    out/kd_teacher/predictions.csv \
    --names alone_s1,distilled_infold_s1,distilled_infold_utk_s1,distilled_infold_utk_s1_a09,teacher \
    --out out/kd_compare_s1
python scripts/bench_distill.py --teacher "${TEACHER[@]}" --student runs/kd_oof/1 --data data/realfaces \
    --images 400 --tta identity,hflip --repeats 3
