#!/usr/bin/env bash
# The real-photo recipe's ablation (docs/studies/real-photo-recipe.md): the same data, fold, seed and budget
# for every row.
#   whole_cls    whole photo, 3-class age head            (the old realfaces recipe)
#   whole_years  whole photo, years age head
#   face_cls     face crop,   3-class age head
#   face_years   face crop,   years age head               (configs/realfaces_cpu.yaml as it is)
#   single18     whole photo, one 18-class head            (configs/realfaces_single18.yaml)
# Each run is scored on the eval photos with its tuned decisions (out/<prefix>_<row>) and without them
# (out/<prefix>_<row>_argmax); `multitask compare` then gives paired differences with 95 % intervals, resampling
# people (the eval gt has no person column: gender, race and age in years identify one). The recipe's mask head is
# also scored on the real mask photos.
#
#   python ../shared/tools/make_realfaces.py --faces ../shared/data/utkface-dev --out data/realfaces \
#       --people 400 --eval-people 200
#   bash scripts/realfaces_ablation.sh                     # ROWS="face_years single18" to run some rows only
set -euo pipefail
DATA=${DATA:-data/realfaces}
REALMASK=${REALMASK:-../shared/data/realmask-dev/manifest.csv}
PREFIX=${PREFIX:-realfaces}
ROWS=${ROWS:-"whole_cls whole_years face_cls face_years single18"}
CLASSES=(heads.age.target=classes "heads.age.loss={focal: 0.5, f1: 0.5}")

train() {   # row, then config and overrides
    local row=$1; shift
    if [ ! -f "runs/${PREFIX}_$row/1/best.pt" ]; then
        /usr/bin/time -f "$row: trained in %e s" multitask train "$@" "name=${PREFIX}_$row" "data.root=$DATA"
    fi
    for decisions in auto off; do
        local out="out/${PREFIX}_$row"; [ $decisions = off ] && out+="_argmax"
        multitask predict --ckpt "runs/${PREFIX}_$row/1" --data "$DATA" --gt "$DATA/eval/gt.csv" --out "$out" \
            --decisions $decisions
    done
}

for row in $ROWS; do
    case $row in
        whole_cls)   train $row --config configs/realfaces_cpu.yaml data.crop=none "${CLASSES[@]}" ;;
        whole_years) train $row --config configs/realfaces_cpu.yaml data.crop=none ;;
        face_cls)    train $row --config configs/realfaces_cpu.yaml "${CLASSES[@]}" ;;
        face_years)  train $row --config configs/realfaces_cpu.yaml ;;
        single18)    train $row --config configs/realfaces_single18.yaml ;;
        *) echo "unknown row $row" >&2; exit 2 ;;
    esac
done

tables() { for row in "$@"; do printf 'out/%s_%s/predictions.csv ' "$PREFIX" "$row"; done; }
group=(--group-by true/gender,race,age_years)
# every lever against the old recipe, the years head with the face crop, decisions on/off, the recipe vs single 18
multitask compare $(tables whole_cls whole_years face_cls face_years) --names whole_cls,whole_years,face_cls,face_years \
    --out "out/${PREFIX}_compare_levers" "${group[@]}"
multitask compare $(tables face_cls face_years) --names face_cls,face_years \
    --out "out/${PREFIX}_compare_years" "${group[@]}"
multitask compare $(tables face_years_argmax face_years) --names argmax,decisions \
    --out "out/${PREFIX}_compare_decisions" "${group[@]}"
multitask compare $(tables single18 face_years whole_cls) --names single18,face_years,whole_cls \
    --out "out/${PREFIX}_compare_single18" "${group[@]}"
# the recipe's mask head on real mask photos (a labelled manifest: scored without --gt)
multitask predict --ckpt "runs/${PREFIX}_face_years/1" --data "$REALMASK" --out "out/${PREFIX}_realmask"
