"""``flowforge datasets``: the datasets and where the on-disk ones must be."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ds = sub.add_parser(
        "datasets",
        help="list the datasets and where the on-disk ones must be",
        description="Every dataset, its dimension, whether it is available, and for the ones "
        "not shipped the exact files and folder it expects.",
    )
    ds.add_argument("--data-dir", help="folder of the on-disk datasets (default $FLOWFORGE_DATA)")
    ds.add_argument("--json", action="store_true", help="print a JSON list")


def run(args: argparse.Namespace) -> int:
    from flowforge.data import default_data_dir, list_datasets

    if args.data_dir is not None and Path(args.data_dir).expanduser().is_file():
        from flowforge.runs.errors import ConfigError

        raise ConfigError(f"--data-dir {args.data_dir} is a file; the data folder is a folder")
    infos = list_datasets(args.data_dir)
    rows = [
        {
            "name": i.name,
            "kind": i.kind,
            "dim": math.prod(i.event_shape),
            "shape": list(i.event_shape),
            "available": i.available,
            "description": i.description,
            "files": i.files,
        }
        for i in infos
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    root = default_data_dir(args.data_dir)
    print(f"data folder: {root} (set with --data-dir or FLOWFORGE_DATA)\n")
    print(f"{'name':<22} {'kind':<8} {'dim':>5}  {'available':<9}  description")
    for r in rows:
        print(
            f"{r['name']:<22} {r['kind']:<8} {r['dim']:>5}  "
            f"{'yes' if r['available'] else 'no':<9}  {r['description']}"
        )
        if not r["available"] and r["files"]:
            print(f"{'':<50}expects: {r['files']}")
    return 0
