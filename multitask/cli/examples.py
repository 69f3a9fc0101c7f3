"""The examples that end each command's --help: commands that work from a checkout (the quickstart's data and
run dir). Plain text, so `multitask --help` stays instant."""

# the last lines of each --help: commands that work from a checkout (the quickstart's data and run dir)
EXAMPLES = {
    "multitask": """
  multitask train --config configs/quickstart.yaml
  multitask predict --ckpt runs/quickstart/1 --data data/synthetic --out out/quickstart
  multitask report runs/quickstart/1
  multitask config show --config configs/quickstart.yaml""",
    "train": """
  multitask train --config configs/quickstart.yaml
  multitask train --config configs/quickstart.yaml --heads age train.epochs=3 name=age_only
  multitask train --config configs/quickstart.yaml --folds all
  multitask train --resume runs/quickstart/1""",
    "distill": """
  multitask train --config configs/quickstart.yaml --folds all name=teacher
  multitask distill --teacher runs/teacher/1 --config configs/quickstart.yaml name=student
  multitask distill --teacher runs/a/1 runs/b/1 --config configs/quickstart.yaml train.distill.alpha=0.5 \\
      --unlabelled photos/ --name student_unl
  multitask train --resume runs/student/1          # the teacher's probabilities come from the cache""",
    "predict": """
  multitask predict --ckpt runs/quickstart/1 --data data/synthetic --out out/quickstart
  multitask predict --ckpt runs/quickstart/1 --data data/synthetic --out out/tta --tta identity,hflip \\
      --gt data/synthetic/eval/gt.csv
  multitask predict --ckpt runs/quickstart/1 runs/quickstart_seed7/1 --weights 2 1 --data data/synthetic/eval/images \\
      --out out/ensemble --decisions off""",
    "tune-decisions": """
  multitask tune-decisions runs/quickstart/1
      -> runs/quickstart/1/decisions.json; predict --ckpt runs/quickstart/1 applies it (--decisions off: argmax)
  multitask tune-decisions runs/kfold/1 --parts 5 --draws 2000""",
    "report": """
  multitask report runs/quickstart/1
  multitask report --pred out/quickstart/predictions.csv --gt data/synthetic/eval/gt.csv
  multitask report runs/quickstart/1 --data data/synthetic --log tensorboard,wandb
  multitask report runs/quickstart/1 --cam-photos 64            # maps of 64 photos per head (0: none)""",
    "explain": """
  multitask explain --ckpt runs/quickstart/1 data/synthetic/eval/images --out out/explain
      -> out/explain/<photo>_<head>.png per photo and head, and explain.csv (class, probability)
  multitask explain --ckpt runs/quickstart/1/best.pt photo.jpg --head mask --method gradcam++ --out out/explain""",
    "synth": """
  multitask synth --out data/synthetic
  multitask synth --out data/small --people 20 --eval-people 8 --size 64x80 --seed 1""",
    "config": """
  multitask config show
  multitask config show --config configs/quickstart.yaml train.epochs=3 > shown.yaml""",
    "config show": """
  multitask config show
  multitask config show --config configs/quickstart.yaml train.epochs=3 heads.age.bins=[30,58] > shown.yaml
  multitask train --config shown.yaml""",
    "export": """
  multitask export runs/quickstart/1 --format onnx
      -> runs/quickstart/1/best.onnx; prints the parity vs PyTorch (max |delta prob|, argmax agreement)
  multitask export runs/quickstart/1 --format onnx --quantize int8 \\
      --calibration data/synthetic/train/images --data data/synthetic --gt data/synthetic/eval/gt.csv
      -> best.int8.onnx calibrated on 64 training photos; prints fp32 vs int8 macro F1 on the eval set
  multitask export runs/quickstart/1 --format safetensors --out deploy/quickstart
      -> deploy/quickstart/model.safetensors + config.json (predict --ckpt deploy/quickstart reads it)
  multitask export runs/quickstart/1 --format onnx --batch 1 --out deploy/quickstart_b1.onnx
      -> a fixed batch of 1, for runtimes without dynamic shapes""",
    "sweep": """
  multitask sweep --config configs/quickstart.yaml --space configs/sweeps/optimizer.yaml --trials 20
  multitask sweep --config configs/quickstart.yaml --space configs/sweeps/optimizer.yaml --trials 30   # 10 more
  multitask sweep --config configs/quickstart.yaml --space configs/sweeps/age_head.yaml --trials 16 --jobs 2 \\
      train.epochs=4 --name age_sweep
  multitask sweep --config configs/mask_effnet_b0_multihead.yaml --space configs/sweeps/optimizer.yaml \\
      --trials 100 --storage postgresql://user:pass@dbhost/sweeps      # the same command on every machine

Writes runs/<name>/sweep/: study.db, <trial>/ run dirs, trials.csv, best.yaml, history.png, curves.png,
importances.png. Rerunning the command continues the study (after a kill too); train the winner with
multitask train --config runs/<name>/sweep/best.yaml""",
    "compare": """
  multitask compare runs/quickstart/1 runs/quickstart_single18/1     # two runs' oof.csv (same seed: same fold)
  multitask compare out/a/predictions.csv out/b/predictions.csv out/ens/predictions.csv --names a,b,ensemble
  multitask compare runs/kfold_r18/1 runs/kfold_effb0/1 --out out/compare_kfold   # k-fold runs: every image
  multitask compare out/a/predictions.csv out/b/predictions.csv --group-by gender,race,age_years

Every later table is compared with the first: B - A = +0.021 (95% -0.004...+0.046), not significant.
Writes OUT/compare.md, compare.json and compare.png (the differences with their intervals).""",
}
