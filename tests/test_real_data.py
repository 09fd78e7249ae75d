"""Checks on the users' real images; skipped cleanly while ../shared/data/train.pkl is absent."""
import os
import re

import pytest

from conftest import REAL_DATA, run_script

pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not os.path.exists(REAL_DATA),
                                 reason=f"real data not present at {REAL_DATA}")]


def test_brief_training_on_real_data_is_far_above_chance(tmp_path):
    trained = run_script("train.py", f"--data={REAL_DATA}", "--epochs=2", "--augment=False",
                         "--verbose=2", cwd=tmp_path, timeout=1800)
    assert trained.returncode == 0, trained.stderr[-3000:]
    scored = run_script("evaluate.py", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    accuracy = float(re.search(r"test accuracy: (\d\.\d+)", scored.stdout).group(1))
    assert accuracy > 0.5  # chance is under 0.1 on 36 imbalanced classes
