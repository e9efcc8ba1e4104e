"""Generated bad inputs (benchmarks/bad_inputs.py's generators, a small set) through every command: each must
end with exit status 2, one line on stderr starting ``spikediff: error:``, no traceback, and nothing written.

Most cases run in this process through ``spikediff.cli.main`` (fast); one case of several classes runs in a
fresh interpreter, where stderr and the exit status are the real ones. The seed is SPIKEDIFF_FUZZ_SEED
(default 25): a failure names it and the case, so it can be replayed.
"""

import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bad_inputs  # noqa: E402

FRESH_PROCESS = ("special file as input", "checkpoint: not a spikediff file", "checkpoint: non-finite weight",
                 "option: bad choice or usage", "output path")


def test_every_generated_bad_input_gives_one_clean_error(tmp_path):
    seed = int(os.environ.get("SPIKEDIFF_FUZZ_SEED", "25"))
    rng = random.Random(seed)
    _sources, cases = bad_inputs.all_cases(tmp_path, rng, per_class=2)
    classes = {case.cls for case in cases}
    assert len(classes) >= 15 and len(cases) >= 300, (len(classes), len(cases))
    for cls in FRESH_PROCESS:
        next(case for case in cases if case.cls == cls).subprocess = True
    results = [bad_inputs.run_case(case, timeout=60) for case in cases]
    bad = [f"{r.case.cls} | {r.case.name} | spikediff {' '.join(map(str, r.case.argv))} | {'; '.join(r.problems)}"
           for r in results if not r.clean]
    assert not bad, f"seed {seed}: {len(bad)} of {len(results)} not clean:\n" + "\n".join(bad)
    assert sum(r.case.subprocess for r in results) == len(FRESH_PROCESS)
    assert not list(tmp_path.rglob("*.part"))
