#!/usr/bin/env python3
"""TensorBoard reads a run's event files as exactly its metrics.csv, across a kill and a resume.

1. trains a tiny ijepa-rs run with checkpoints every 3 steps and the online k-NN probe every 2,
   killed (abort) after step 5, so steps 4-5 were logged after the last checkpoint;
2. resumes it to step 8 (steps 4-8 are logged again, in a second event file);
3. loads the run directory with TensorBoard's own reader (EventAccumulator, which drops the
   superseded steps as it does for restarted TensorFlow jobs) and checks that its scalar tags
   are every column of metrics.csv but `step`, each with metrics.csv's steps and values (to
   the digits metrics.csv prints, plus float32 rounding).

    python ijepa-cli/tests/python/check_tensorboard.py [--cli target/debug/ijepa-cli]

Needs the `tensorboard` package (ijepa-encoder/tests/fixtures/requirements.txt). .ci/run calls
it when it is importable and prints a visible SKIPPED line otherwise.
"""
import argparse
import csv
import math
import os
import subprocess
import tempfile
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[3]
TINY = ["--set", "model.args.img_size=48", "--set", "model.args.embed_dim=32", "--set", "model.args.num_heads=2",
        "--set", "model.args.depth=1", "--set", "model.predictor_embed_dim=16", "--set", "model.predictor_depth=1",
        "--set", "model.args.patch_size=8", "--set", "data.synthetic_images=32", "--set", "mask.min_keep=1",
        "--set", "run.checkpoint_every=3", "--set", "probe.every=2", "--set", "probe.max_images=16",
        "--batch-size", "4", "--no-probe"]


def printed(text):
    """Half a unit in the last place metrics.csv printed `text` with."""
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals) if "." in mantissa or exponent else 0.0


def pretrain(binary, run, *args, abort_after=None):
    env = dict(os.environ)
    if abort_after is not None:
        env["IJEPA_TEST_ABORT_AFTER_STEP"] = str(abort_after)
    r = subprocess.run([str(binary), "pretrain", "--out", str(run), *args], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return r.returncode, r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", default=str(ROOT / "target" / "debug" / "ijepa-cli"))
    binary = Path(ap.parse_args().cli)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        code, err = pretrain(binary, run, *TINY, "--max-steps", "8", abort_after=5)
        assert code != 0, f"the run was to be killed after step 5:\n{err}"
        code, err = pretrain(binary, run, "--resume", "--no-probe", "--max-steps", "8")
        assert code == 0, err
        events = sorted(p.name for p in run.glob("events.out.tfevents.*"))
        assert len(events) == 2, events

        with open(run / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["step"]) for r in rows] == list(range(1, 9)), [r["step"] for r in rows]
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        columns = set(rows[0]) - {"step"}
        assert tags == columns, (sorted(tags), sorted(columns))
        worst = 0.0
        for tag in sorted(tags):
            want = [(int(r["step"]), r[tag]) for r in rows if r[tag] != ""]
            got = [(e.step, e.value) for e in acc.Scalars(tag)]
            assert [s for s, _ in got] == [s for s, _ in want], (tag, got, want)
            for (_, g), (_, text) in zip(got, want):
                w = float(text)
                if math.isnan(w):
                    assert math.isnan(g), (tag, g, text)
                    continue
                # TensorBoard holds the value as an f32; metrics.csv as printed.
                d = abs(g - w) - printed(text) - 6e-8 * abs(w)
                assert d <= 0, (tag, g, text)
                worst = max(worst, abs(g - w) / max(abs(w), 1e-30))
        knn = [e.step for e in acc.Scalars("knn_top1")]
        assert knn == [2, 4, 6, 8], knn
        print(f"ok: TensorBoard {len(tags)} scalar tags = metrics.csv columns, steps 1-8 after a kill at 5 "
              f"and a resume from 3, largest relative difference {worst:.1e} (metrics.csv's printed digits); k-NN at {knn}")


if __name__ == "__main__":
    main()
