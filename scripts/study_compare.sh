#!/usr/bin/env bash
# The comparison that ends a real-photo study script: every row against the first, on the eval photos and on the
# held-out real mask photos, from out/<prefix>_<row>[_realmask]/predictions.csv.
#   bash scripts/study_compare.sh PREFIX ROW...     # out/<prefix>_compare_{eval,realmask}
set -euo pipefail
PREFIX=$1; shift
[ "$#" -ge 2 ] || exit 0   # one row: nothing to compare it with
tables() { local suffix=$1; shift; for row in "$@"; do printf 'out/%s_%s%s/predictions.csv ' "$PREFIX" "$row" "$suffix"; done; }
names() { local IFS=,; echo "$*"; }
eval_rows=(); for row in "$@"; do [ -f "out/${PREFIX}_$row/predictions.csv" ] && eval_rows+=("$row"); done
# eval photos: people are resampled by gender, race and age in years (the eval gt has no person column); a mask
# specialist row has no eval predictions and is left out there
[ "${#eval_rows[@]}" -ge 2 ] && multitask compare $(tables "" "${eval_rows[@]}") --names "$(names "${eval_rows[@]}")" \
    --out "out/${PREFIX}_compare_eval" --group-by true/gender,race,age_years
# held-out real mask photos: holdout.csv's group column is the source image
multitask compare $(tables _realmask "$@") --names "$(names "$@")" --out "out/${PREFIX}_compare_realmask"
