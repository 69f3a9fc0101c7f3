#!/usr/bin/env bash
# What the real-photo study scripts share, sourced by them (`. scripts/study_lib.sh`); they set PREFIX, SEED, DATA
# and SHARED first.
#   study_row ROW ARGS...       train runs/<prefix>_<row> (unless its best.pt exists; the time is appended to
#                               out/<prefix>_times.txt and printed), then score it on the eval photos and on the
#                               held-out real mask photos (a mask_* specialist row: the real masks only)
#   study_ensemble ROW MEMBER... score the trained rows MEMBER... as one ensemble under hflip TTA (predict's mean of
#                               probabilities), as row ROW: nothing is trained
#   study_compare ROW...        every row against the first: out/<prefix>_compare_{eval,realmask}

study_row() {
    local row=$1; shift
    mkdir -p out
    if [ ! -f "runs/${PREFIX}_$row/1/best.pt" ]; then
        /usr/bin/time -o "out/${PREFIX}_times.txt" -a -f "$row: trained in %e s" \
            multitask train "$@" ${SEED:+"seed=$SEED"} "name=${PREFIX}_$row"
        tail -n 1 "out/${PREFIX}_times.txt"
    fi
    [[ $row == mask_* ]] ||   # a mask specialist has no composite to score on the eval photos
        multitask predict --ckpt "runs/${PREFIX}_$row/1" --data "$DATA" --gt "$DATA/eval/gt.csv" --out "out/${PREFIX}_$row"
    multitask predict --ckpt "runs/${PREFIX}_$row/1" --data "$SHARED/realmask-dev/holdout.csv" \
        --out "out/${PREFIX}_${row}_realmask"
}

study_ensemble() {
    local row=$1 member ckpts=(); shift
    for member in "$@"; do ckpts+=("runs/${PREFIX}_$member/1"); done
    multitask predict --ckpt "${ckpts[@]}" --tta identity,hflip --data "$DATA" --gt "$DATA/eval/gt.csv" \
        --out "out/${PREFIX}_$row"
    multitask predict --ckpt "${ckpts[@]}" --tta identity,hflip --data "$SHARED/realmask-dev/holdout.csv" \
        --out "out/${PREFIX}_${row}_realmask"
}

study_compare() {
    [ "$#" -ge 2 ] || return 0   # one row: nothing to compare it with
    local eval_rows=() row
    for row in "$@"; do [ -f "out/${PREFIX}_$row/predictions.csv" ] && eval_rows+=("$row"); done
    # eval photos: people are resampled by gender, race and age in years (the eval gt has no person column); a mask
    # specialist row has no eval predictions and is left out there
    if [ "${#eval_rows[@]}" -ge 2 ]; then
        multitask compare $(_study_tables "" "${eval_rows[@]}") --names "$(_study_names "${eval_rows[@]}")" \
            --out "out/${PREFIX}_compare_eval" --group-by true/gender,race,age_years
    fi
    # held-out real mask photos: holdout.csv's group column is the source image
    multitask compare $(_study_tables _realmask "$@") --names "$(_study_names "$@")" \
        --out "out/${PREFIX}_compare_realmask"
}

_study_tables() { local suffix=$1; shift; for row in "$@"; do printf 'out/%s_%s%s/predictions.csv ' "$PREFIX" "$row" "$suffix"; done; }
_study_names() { local IFS=,; echo "$*"; }
