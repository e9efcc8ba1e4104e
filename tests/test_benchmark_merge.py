"""The benchmarks' ``--merge`` (``model_table.kept_rows``): a table keeps the rows a run does not measure again,
but never two rows for one measurement: a shipped model's rows on its replaced checkpoint go, and so do the rows
of a checkpoint first measured by path once it is measured again under its shipped name. Speeds carried by
``--no-timing`` follow the checkpoint, not its name."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from model_table import SPEEDS, keep_speeds, kept_rows, speeds_note, with_speeds  # noqa: E402


def _row(model, digest, steps, n=1000):
    return {"model": model, "checkpoint_digest": digest, "steps": steps, "n": n}


def _key(r):
    return r["model"], r["steps"], r["n"]


def test_merge_keeps_other_rows_and_drops_replaced_and_renamed_ones(tmp_path, capsys):
    out = tmp_path / "table.md"
    old = [_row("shipped", "old", 8), _row("shipped", "old", 20), _row("by-path", "new", 7),
           _row("by-path", "new", 8), _row("other", "x", 7), _row("shipped", "new", 5)]
    out.with_suffix(".json").write_text(json.dumps({"command": "first", "rows": old}))
    measured = [_row("shipped", "new", 7), _row("shipped", "new", 20)]
    kept = kept_rows(out, {_key(r) for r in measured}, {"shipped": "new"}, key=_key,
                     label=lambda r: f"row at {r['steps']} steps")
    kept = [(r["model"], r["checkpoint_digest"], r["steps"]) for r in kept]
    # the old checkpoint's rows under the shipped name go, measured or not; the path-named row measured again
    # under the shipped name (7 steps) goes, the one not measured again (8 steps) stays, as do other models'
    # and the shipped model's own rows at other step counts
    assert kept == [("by-path", "new", 8), ("other", "x", 7), ("shipped", "new", 5)]
    err = capsys.readouterr().err
    assert err.count("measured on another checkpoint") == 2
    assert "dropped the by-path row at" in err and "under another name" in err


def test_speeds_follow_the_checkpoint_not_its_name():
    timed = {**_row("mnist", "patch", 20), **dict.fromkeys(SPEEDS, 1.0), "lava_s_per_image": 29.4,
             "speeds_machine": "EPYC, 2 cores"}
    untimed = {**_row("mnist", "unet", 20), **dict.fromkeys(SPEEDS)}
    renamed, other = {**_row("mnist-patch", "patch", 20)}, {**_row("mnist", "unet", 20)}
    keep_speeds([renamed, other], [timed, untimed])
    assert renamed["lava_s_per_image"] == 29.4 and all(renamed[k] is not None for k in SPEEDS)
    assert renamed["speeds_machine"] == "EPYC, 2 cores"
    assert "lava_s_per_image" not in other  # no timed row of its checkpoint: nothing carried


def test_refreshed_speeds_go_to_every_row_of_the_checkpoint_at_those_steps_only():
    rows = [{**_row("mnist", "unet", 0, n), "denoising_steps": steps} for n, steps in ((1000, 20), (10000, 20), (1000, 5))]
    rows.append({**_row("mnist-patch", "patch", 0), "denoising_steps": 20, "lava_s_per_image": 29.4})
    timed = {("unet", 20): {**dict.fromkeys(SPEEDS, 2.0), "lava_s_per_image": 300.0}}
    got = with_speeds(rows, timed, "cmd", "Xeon, 2 cores", "EPYC, 2 cores")
    assert [r.get("lava_s_per_image") for r in got] == [300.0, 300.0, None, 29.4]
    assert [r.get("speeds_command") for r in got] == ["cmd", "cmd", None, None]
    # the table's header names the machine of the last run: each row's speeds keep the machine that timed them
    assert [r.get("speeds_machine") for r in got] == ["Xeon, 2 cores", "Xeon, 2 cores", None, "EPYC, 2 cores"]
    assert speeds_note(got[:2]) == ""  # one machine: the table's header says which
    assert speeds_note(got) == ("Speeds timed on more than one machine: mnist on Xeon, 2 cores (`cmd`, after their "
                                "FIDs); mnist-patch on EPYC, 2 cores.")
