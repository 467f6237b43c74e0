"""The README's Python examples run, in order, as one script: they cannot rot."""

from __future__ import annotations

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


@pytest.mark.slow
def test_readme_cli_commands_run(tmp_path: Path) -> None:
    """Every command of the README's block, in order, through ``cli.main`` in this process (the
    ``python -m flowforge`` entry point itself is run by the subprocess tests of test_cli.py)."""
    lines = cli_block()
    assert lines and all(line.startswith("flowforge ") for line in lines)
    for line in lines:
        args = shlex.split(line)[1:]
        done = run_cli(*args, *(["--quiet"] if args[0] == "train" else []), cwd=tmp_path)
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
