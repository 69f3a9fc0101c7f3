"""The package's shape holds: stages layered without cycles, modules and functions small enough to read whole, and
no function-local import of the package outside the CLI (cli/) (where it keeps `--help` instant)."""
import ast
import importlib
import re
import shutil
import subprocess

import grimp
import pytest
from helpers import REPO

PACKAGE = REPO / "multitask"
MODULE_LINES, FUNCTION_LINES = 400, 60
CLI = PACKAGE / "cli"


def sources():
    return sorted(PACKAGE.rglob("*.py"))


def test_the_import_graph_has_no_cycle():
    graph = grimp.build_graph("multitask", include_external_packages=False)
    for module in graph.modules:
        for other in graph.find_modules_directly_imported_by(module):
            assert not graph.chain_exists(importer=other, imported=module), \
                f"import cycle: {module} -> {other} -> ... -> {module}"


def test_layers_contract_is_kept():
    """The same check CI runs before pytest (`lint-imports`, the contract in pyproject.toml)."""
    command = shutil.which("lint-imports")
    if command is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]'")
    done = subprocess.run([command], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_modules_and_functions_are_short():
    long_modules = [f"{p.relative_to(PACKAGE)}: {n} lines" for p in sources()
                    if (n := len(p.read_text().splitlines())) > MODULE_LINES]
    assert not long_modules, long_modules
    long_functions = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                if size > FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {size} lines")
    assert not long_functions, long_functions


def test_the_package_imports_itself_at_module_level_except_in_the_cli():
    """A function-local `from ..x import y` hides a dependency from the layers check: only the cli/ package may, to keep
    `multitask --help` from importing torch."""
    hidden = []
    for path in sources():
        if path.parent == CLI:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    own = (isinstance(inner, ast.ImportFrom) and (inner.level > 0 or (inner.module or "")
                                                                  .startswith("multitask"))
                           or isinstance(inner, ast.Import) and any(a.name.startswith("multitask")
                                                                    for a in inner.names))
                    if own:
                        hidden.append(f"{path.relative_to(PACKAGE)}:{inner.lineno} in {node.name}")
    assert not hidden, hidden


def test_public_entry_points_import_from_their_documented_places():
    from multitask.config import load_config
    from multitask.train import Callback, fit, run_training

    assert callable(load_config) and callable(fit) and callable(run_training) and isinstance(Callback, type)


def test_the_validation_key_rule_has_one_owner():
    """`val/<key>` and `val/<source>/<key>` are spelled in config/metric_names.py alone: the schema's monitored
    metric, the trainer's keys, the console and wandb's summaries cannot drift apart."""
    owner = PACKAGE / "config" / "metric_names.py"
    spelled = [f"{p.relative_to(PACKAGE)}:{n}" for p in sources() if p != owner
               for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"""f["']val/\{""", line)]
    assert not spelled, spelled


def test_config_values_are_validated_at_the_config_boundary_alone():
    """class_weights, cagrad_c, dwa_temperature and years_sigma are checked by config/validate.py, once: no other module
    raises about their form or range (class_weights 'auto' without counts is a data check, not the value's)."""
    keys = re.compile(r"\.(cagrad_c|dwa_temperature|years_sigma):|class_weights: (expected|need)")
    raised = []
    for path in sources():
        if path == PACKAGE / "config" / "validate.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and keys.search(ast.unparse(node)):
                raised.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not raised, raised


def test_croppers_and_face_plans_are_built_in_data_crops_alone():
    """Training, predict, export, the report and explain get their Cropper from data/crops.py (make_cropper), so
    one rule says which source's crop applies and a photo is cut the same way everywhere."""
    owners = {PACKAGE / "data" / "crops.py", PACKAGE / "data" / "faces.py"}
    built = [f"{p.relative_to(PACKAGE)}:{node.lineno}" for p in sources() if p not in owners
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
             in ("Cropper", "plan_faces", "cropper_for", "inference_source")]
    assert not built, built


def test_heads_split_into_the_spec_the_composite_maths_and_label_reading():
    """heads/spec.py (what a head is) depends on neither the composite maths nor label reading; the package still
    answers every name its modules define, so `from multitask.heads import ...` works as before the split."""
    import multitask.heads as heads

    graph = grimp.build_graph("multitask", include_external_packages=False)
    assert graph.find_modules_directly_imported_by("multitask.heads.spec") == set()
    assert "multitask.heads.spec" in graph.find_modules_directly_imported_by("multitask.heads.composite")
    for part in ("spec", "composite", "labels"):
        module = importlib.import_module(f"multitask.heads.{part}")
        own = [n for n, v in vars(module).items() if not n.startswith("_") and getattr(v, "__module__", None)
               == module.__name__ and n != "annotations"]
        assert own and set(own) <= set(heads.__all__), (part, set(own) - set(heads.__all__))
    assert heads.HeadSpec.__module__ == "multitask.heads.spec"
    assert heads.composite_encode.__module__ == "multitask.heads.composite"


def test_scripts_import_only_the_public_names_of_each_subpackage():
    """scripts/ (benchmarks, wrappers) are the package's first outside users: each name they import from multitask
    is in its subpackage's `__all__`, so the internals stay free to move."""
    scripts = sorted((PACKAGE.parent / "scripts").glob("*.py"))
    assert scripts
    internal = []
    for path in scripts:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                internal += [f"{path.name}:{node.lineno} import {a.name}" for a in node.names
                             if a.name.startswith("multitask.")]
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("multitask"):
                continue
            package = node.module.split(".")
            if len(package) != 2:   # `from multitask import x` or `from multitask.a.b import x`: not a public face
                internal.append(f"{path.name}:{node.lineno} from {node.module}")
                continue
            public = importlib.import_module(node.module).__all__
            internal += [f"{path.name}:{node.lineno} {node.module}.{a.name}" for a in node.names
                         if a.name not in public]
    assert not internal, internal


def test_every_subpackage_names_its_public_face():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        module = importlib.import_module(f"multitask.{init.parent.name}")
        names = getattr(module, "__all__", None)
        assert names, f"{init.relative_to(PACKAGE)}: no __all__"
        missing = [n for n in names if not hasattr(module, n)]
        assert not missing, (init.parent.name, missing)


def test_unit_tests_neither_train_nor_run_a_command():
    """tests/unit stays the fast inner loop: no module there imports what trains, predicts, exports, sweeps or runs
    a command (those are tests/e2e's; this module only checks that those names exist), and no test module sits
    outside the two folders."""
    runners = {"main", "run_training", "fit", "run_predict", "predict", "run_export", "run_sweep", "run_trial"}
    for path in sorted((REPO / "tests" / "unit").glob("test_*.py")):
        if path.name == "test_architecture.py":
            continue
        reached = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("multitask", "helpers"):
                reached.update(f"{node.module}.{a.name}" for a in node.names if a.name in runners)
            elif isinstance(node, ast.Import):
                reached.update(a.name for a in node.names if a.name in ("subprocess", "torch.multiprocessing"))
        assert not reached, f"{path.name} imports {sorted(reached)}: it belongs in tests/e2e"
    assert not list((REPO / "tests").glob("test_*.py")), "test modules live in tests/unit or tests/e2e"
