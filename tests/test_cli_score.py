"""``flowforge score`` as an anomaly detector: ``--labels`` (AUROC and
average precision), ``--threshold`` / ``--contamination`` (a flag column), ``--plot`` (a
histogram), and the error for a VI run. ``cli.main`` runs in this process
(:func:`cli_util.run_cli`), except for the scores written to a real process's stdout."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from cli_util import TINY_TABLE, assert_bad_input, assert_ok, flowforge, run_cli

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small flow trained on a 3-column table with a header ``a,b,c``."""
    cwd = tmp_path_factory.mktemp("score")
    x = np.random.default_rng(0).normal(size=(300, 3)) * [1.0, 3.0, 0.5] + [0.0, 10.0, -2.0]
    (cwd / "train.csv").write_text("a,b,c\n" + "".join(f"{a},{b},{c}\n" for a, b, c in x))
    args = [*TINY_TABLE, "--data", "train.csv", "--steps", "60", "--eval-every", "30"]
    assert_ok(run_cli("train", *args, "--out", "run", cwd=cwd))
    return cwd / "run"


def _rows() -> tuple[np.ndarray, np.ndarray]:
    """80 normal rows and 20 far anomalies (columns a, b, c), and the 0/1 labels."""
    rng = np.random.default_rng(1)
    normal = rng.normal(size=(80, 3)) * [1.0, 3.0, 0.5] + [0.0, 10.0, -2.0]
    anomalies = rng.normal(size=(20, 3)) * [1.0, 3.0, 0.5] + [5.0, 25.0, 1.0]
    x = np.concatenate([normal, anomalies])
    y = np.r_[np.zeros(80), np.ones(20)]
    order = rng.permutation(100)
    return x[order], y[order]


def _write(path: Path, x: np.ndarray, y: np.ndarray | None, header: bool = True) -> Path:
    """The rows with the label column between the inputs and the inputs reordered (c, y, a, b)."""
    lines = ["c,is_anomaly,a,b" if y is not None else "c,a,b"] if header else []
    for i, (a, b, c) in enumerate(x):
        cells = [c, y[i], a, b] if y is not None else [c, a, b]
        lines.append(",".join(f"{v!r}" for v in map(float, cells)))
    path.write_text("\n".join(lines) + "\n")
    return path


def _scores(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    return np.array([[float(v) for v in line.split(",")] for line in lines[1:]])


def test_the_readme_pair_runs_verbatim_on_a_labelled_file(run_dir: Path, tmp_path: Path) -> None:
    """The README's two ``flowforge score`` lines, on the same labelled ``rows.csv``."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme[readme.index("flowforge score RUN --input rows.csv") :]
    lines = [line.split("#")[0].split() for line in block.split("```")[0].splitlines()]
    assert len(lines) == 2 and all(line[:2] == ["flowforge", "score"] for line in lines)
    x, y = _rows()
    _write(tmp_path / "rows.csv", x, y)
    for line in lines:
        args = [str(run_dir) if a == "RUN" else a for a in line[2:]]
        assert_ok(run_cli("score", *args, cwd=tmp_path))
    assert _scores(tmp_path / "flags.csv").shape == (100, 2)
    assert (tmp_path / "scores.png").read_bytes().startswith(PNG)


def test_an_unnamed_label_column_suggests_labels(run_dir: Path, tmp_path: Path) -> None:
    x, y = _rows()
    _write(tmp_path / "rows.csv", x, y)
    proc = run_cli("score", run_dir, "-i", "rows.csv", cwd=tmp_path)
    assert_bad_input(proc, "extra 'is_anomaly'", "--labels is_anomaly")


def test_inputs_without_rows_are_one_line(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "header.csv").write_text("a,b,c\n")
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    for name in ("header.csv", "empty.npy"):
        assert_bad_input(run_cli("score", run_dir, "-i", name, cwd=tmp_path), "no rows")


def test_labels_print_auroc_and_average_precision(run_dir: Path, tmp_path: Path) -> None:
    x, y = _rows()
    _write(tmp_path / "labelled.csv", x, y)
    _write(tmp_path / "plain.csv", x, None)
    proc = run_cli(
        "score", run_dir, "-i", "labelled.csv", "--labels", "is_anomaly", "-o", "s.csv",
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(proc)
    assert_ok(run_cli("score", run_dir, "-i", "plain.csv", "-o", "p.csv", cwd=tmp_path))
    scores = _scores(tmp_path / "s.csv")[:, 0]
    # the label column is no model input: the same scores as the file without it
    np.testing.assert_allclose(scores, _scores(tmp_path / "p.csv")[:, 0], rtol=1e-12)
    m = re.search(
        r"20 anomalies in 100 rows: AUROC ([\d.]+), average precision ([\d.]+)", proc.stdout
    )
    assert m is not None, proc.stdout
    assert float(m[1]) == pytest.approx(roc_auc_score(y, -scores), abs=1e-4)
    assert float(m[2]) == pytest.approx(average_precision_score(y, -scores), abs=1e-4)
    assert float(m[1]) > 0.9  # the anomalies are far from the training rows


def test_labels_by_index_without_header_and_sklearn_coding(run_dir: Path, tmp_path: Path) -> None:
    x, y = _rows()
    _write(tmp_path / "plain.csv", x, None)
    pm = 1.0 - 2.0 * y  # +1 normal, -1 anomaly, as scikit-learn's predict
    # no header: columns by position, the run's a, b, c with the labels between a and b
    cells = np.c_[x[:, 0], pm, x[:, 1:]]
    (tmp_path / "nohead.csv").write_text(
        "".join(",".join(repr(float(v)) for v in r) + "\n" for r in cells)
    )
    assert_ok(run_cli("score", run_dir, "-i", "plain.csv", "-o", "p.csv", cwd=tmp_path))
    proc = run_cli(
        "score", run_dir, "-i", "nohead.csv", "--no-header", "--labels", "1", cwd=tmp_path
    )
    assert_ok(proc)
    # stdout holds the scores; the metrics go to stderr beside the other messages
    lines = proc.stdout.splitlines()
    assert lines[0] == "log_likelihood" and len(lines) == 101
    scores = np.array([float(v) for v in lines[1:]])
    np.testing.assert_allclose(scores, _scores(tmp_path / "p.csv")[:, 0], rtol=1e-8)
    m = re.search(r"20 anomalies in 100 rows: AUROC ([\d.]+)", proc.stderr)
    assert m is not None, proc.stderr
    assert float(m[1]) == pytest.approx(roc_auc_score(y, -scores), abs=1e-4)


def test_threshold_and_contamination_write_flags(run_dir: Path, tmp_path: Path) -> None:
    x, _ = _rows()
    _write(tmp_path / "plain.csv", x, None)
    assert_ok(run_cli("score", run_dir, "-i", "plain.csv", "-o", "p.csv", cwd=tmp_path))
    ll = _scores(tmp_path / "p.csv")[:, 0]
    t = float(np.median(ll))
    proc = run_cli(
        "score", run_dir, "-i", "plain.csv", "--threshold", repr(t), "-o", "t.csv", cwd=tmp_path
    )
    assert_ok(proc)
    table = _scores(tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "log_likelihood,flag"
    np.testing.assert_array_equal(table[:, 1], np.where(ll < t, -1.0, 1.0))
    assert f"flagged {int((ll < t).sum())} of 100 rows" in proc.stderr
    proc = run_cli(
        "score", run_dir, "-i", "plain.csv", "--contamination", "0.15", "-o", "c.npy", cwd=tmp_path
    )
    assert_ok(proc)
    table = np.load(tmp_path / "c.npy")
    assert table.shape == (100, 2)
    flagged = table[:, 1] == -1
    assert flagged.sum() == 15 and set(table[:, 1]) == {-1.0, 1.0}
    assert ll[flagged].max() < ll[~flagged].min()  # the 15 lowest scores


def test_plot_writes_a_histogram(run_dir: Path, tmp_path: Path) -> None:
    x, y = _rows()
    _write(tmp_path / "labelled.csv", x, y)
    args = ["-i", "labelled.csv", "--labels", "is_anomaly", "--contamination", "0.2"]
    proc = run_cli("score", run_dir, *args, "--plot", "h.png", "-o", "s.csv", cwd=tmp_path)
    assert_ok(proc)
    png = (tmp_path / "h.png").read_bytes()
    assert png.startswith(PNG) and len(png) > 10_000
    assert "wrote the score histogram to h.png" in proc.stderr


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--threshold", "1", "--contamination", "0.1"], ["not allowed with argument"]),
        (["--contamination", "1.5"], ["expected a share between 0 and 1", "'1.5'"]),
        (["--labels", "missing"], ["--labels 'missing'", "no such column", "'is_anomaly'"]),
        (["--labels", "a"], ["'a' is an input column"]),
        (["--labels", "is_anomaly", "--plot", "h.jpg"], ["unsupported output type", ".png"]),
    ],
)
def test_bad_flags_are_one_line(
    run_dir: Path, tmp_path: Path, extra: list[str], fragments: list[str]
) -> None:
    x, y = _rows()
    _write(tmp_path / "labelled.csv", x, y)
    proc = run_cli("score", run_dir, "-i", "labelled.csv", *extra, cwd=tmp_path)
    assert_bad_input(proc, *fragments)


def test_labels_of_another_coding_are_refused(run_dir: Path, tmp_path: Path) -> None:
    x, y = _rows()
    _write(tmp_path / "labelled.csv", x, 2.0 * y + 3.0)
    proc = run_cli("score", run_dir, "-i", "labelled.csv", "--labels", "is_anomaly", cwd=tmp_path)
    assert_bad_input(proc, "labels must be 0 (normal) / 1 (anomaly)", "got 3, 5")


def test_score_on_a_vi_run_is_a_clear_error(tmp_path: Path) -> None:
    args = ["--target", "u1", "--flow", "planar", "--transforms", "1", "--steps", "3"]
    args += ["--samples", "16", "--eval-samples", "64", "--out", "vi"]
    assert_ok(run_cli("vi", *args, cwd=tmp_path))
    (tmp_path / "x.csv").write_text("a,b\n0,0\n")
    proc = run_cli("score", "vi", "-i", "x.csv", cwd=tmp_path)
    assert_bad_input(proc, "variational-inference run", "flowforge train", "eval / sample")
    assert "malformed" not in proc.stderr


def test_dash_output_is_stdout_like_no_output(run_dir: Path, tmp_path: Path) -> None:
    x, _ = _rows()
    _write(tmp_path / "plain.csv", x, None)
    dash = run_cli("score", run_dir, "-i", "plain.csv", "-o", "-", cwd=tmp_path)
    none = flowforge("score", run_dir, "-i", "plain.csv", cwd=tmp_path)  # a process's stdout
    assert_ok(dash)
    assert_ok(none)
    assert dash.stdout == none.stdout and dash.stdout.startswith("log_likelihood\n")
    assert len(dash.stdout.splitlines()) == 101
    assert not (tmp_path / "-").exists()
