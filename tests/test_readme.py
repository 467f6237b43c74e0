"""The README's Python examples run, in order, as one script: they cannot rot."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import pytest

from cli_util import run_cli

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples() -> None:
    assert len(python_blocks()) >= 2


def test_readme_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for i, block in enumerate(python_blocks()):
        code = compile(block, f"README.md[python block {i}]", "exec")
        exec(code, namespace)


def cli_block() -> list[str]:
    text = README.read_text()
    marker = "<!-- the commands below are run by tests/test_readme.py -->"
    block = text.split(marker, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


#: Shorter runs for the test, given after the README's own values as a user would (the last
#: value of a flag wins): the README's command runs as written, every flag of it parsed and
#: applied, with a fifth of the steps (the resumed run still goes past the first one's end).
SHORTER = {"--steps": lambda n: max(n // 5, 10), "--epochs": lambda n: 1}


def shorter(args: list[str]) -> list[str]:
    """The overrides of :data:`SHORTER` for the README command ``args``."""
    extra: list[str] = []
    for flag, value in itertools.pairwise(args):
        if flag in SHORTER:
            extra += [flag, str(SHORTER[flag](int(value)))]
    return extra


def test_shorter_keeps_the_order_of_a_resume() -> None:
    assert shorter(["train", "--steps", "300"]) == ["--steps", "60"]
    assert shorter(["train", "--resume", "r", "--steps", "500"]) == ["--steps", "100"]
    assert shorter(["train", "--epochs", "3"]) == ["--epochs", "1"]


@pytest.mark.slow
def test_readme_cli_commands_run(tmp_path: Path) -> None:
    """Every command of the README's block, in order, through ``cli.main`` in this process (the
    ``python -m flowforge`` entry point itself is run by the subprocess tests of test_cli.py),
    with fewer steps (:func:`shorter`)."""
    lines = cli_block()
    assert lines and all(line.startswith("flowforge ") for line in lines)
    for line in lines:
        args = shlex.split(line)[1:]
        extra = ["--quiet", *shorter(args)] if args[0] == "train" else []
        done = run_cli(*args, *extra, cwd=tmp_path)
        assert done.returncode == 0, f"{line}\n{done.stderr}"
    assert (tmp_path / "scores.csv").exists()
    assert '"bpd"' in done.stdout


def test_readme_toml_example_is_a_valid_config(tmp_path: Path) -> None:
    from flowforge.train.config import TrainConfig, read_toml

    text = README.read_text()
    toml_block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "experiment.toml"
    path.write_text(toml_block)
    config = TrainConfig.from_dict(read_toml(path), source=str(path))
    assert config.data == "breast_cancer" and config.flow == "maf" and config.patience == 5
