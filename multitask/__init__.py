"""multitask: multi-head multi-task image classifiers on a shared timm trunk.

One subpackage per stage; an import only ever points down this list (the layers contract in pyproject.toml, checked
by `lint-imports` in CI):

    cli/              argparse and dispatch, one module per command group; each command imports what it runs, so
                      `--help` is instant
    experiments/      sweeps: the Optuna study, one trial, the --jobs workers, the search space, the summary
    analysis/         compare (paired bootstrap differences), report/ (the error report), explain (activation maps)
    train/            run_training, the one assembly of a training (teacher, run dir, folds, fit, decisions), for
                      the CLI, sweep trials and Python alike; Trainer, TrainState, callbacks, validation, optimizers,
                      MixUp/CutMix, distillation (the teacher: predict's ensemble on the training images, cached)
    infer/            predict as a pipeline: ensemble, forward (every member under every TTA view), merge, decide,
                      write, score; the PyTorch / onnxruntime backends
    export/           the model file formats (manifest, ONNX, safetensors, int8) and `multitask export`
    tracking/         the Tracker fanning out to its sinks (TensorBoard, wandb, a caller's own), metrics.csv and the
    decisions/        console. decisions: fitting class offsets on a run's OOF, applying them, decisions.json
    runs/             what a run leaves on disk: every file name, run and fold dirs, checkpoints, resume rules, the
                      run-dir lock
    model/ metrics/   model: the timm trunk with one head per task, losses (+ the distillation KL), weightings,
                      weights from files.
    data/             metrics: the epoch accumulator, stats (bootstrap, the one macro F1), the predictions table,
                      intervals, the confusion figure. data: sources (competition folders, manifests, synthetic faces),
                      splits by person, the decode-once cache, face crops, transforms, predict's inputs, ground truth
    config/           the typed schema, loading YAML with a.b=value overrides, `config show`
    utils/ heads/     utils: errors, the one atomic I/O, parsing, devices and precision, DDP, progress, text.
                      heads: HeadSpec (spec), the composite label's arithmetic and joint maths (composite),
                      reading labels (labels)

The data flow: a config (config/) names the data (data/) and the model (model/); train/ fits it, logging through
tracking/ into a run dir (runs/); infer/ reads run dirs or exports (export/) and writes predictions (metrics/'s table);
analysis/ reads those tables; experiments/ runs many trainings; cli/ is the door to all of them.
"""

__version__ = "0.1.0"
