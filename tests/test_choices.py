"""napari_dip.choices: one list per option, validated in one place."""

import numpy as np
import pytest

from napari_dip.choices import (
    CHANNELS, NOISE_MODEL, PRESET, SR_FACTOR, STACK_MODE, STOPPING, TASK, resolve_preset,
)


def test_each_option_checks_its_values_and_names_the_valid_ones():
    assert TASK.check("inpaint") == "inpaint"
    assert SR_FACTOR.check(np.int64(3)) == 3 and type(SR_FACTOR.check(np.int64(3))) is int
    for option, bad, message in [
        (TASK, "deblur", "unknown task 'deblur': choose one of denoise, jpeg, inpaint, sr, deconvolve"),
        (PRESET, "huge", "unknown preset 'huge': choose one of auto, paper, light"),
        (STOPPING, "early", "unknown stopping rule 'early'"),
        (SR_FACTOR, 5, "unknown super-resolution factor 5: choose one of 2, 3, 4, 8"),
        (SR_FACTOR, True, "unknown super-resolution factor True"),
        (CHANNELS, "mixed", "unknown channel mode 'mixed': choose one of joint, separate"),
        (NOISE_MODEL, "poisson",
         "unknown noise model 'poisson': choose one of auto, gaussian, poisson-gaussian"),
        (STACK_MODE, "4d", "unknown stack mode '4d': choose one of slices, warm, 3d"),
    ]:
        with pytest.raises(ValueError, match=message):
            option.check(bad)


def test_labels_menus_and_defaults():
    assert TASK.menu()[0] == ("denoise", "denoise") and TASK.label("sr") == "super-resolution"
    assert all(option.default in option.values
               for option in (TASK, PRESET, STOPPING, SR_FACTOR, CHANNELS, NOISE_MODEL,
                              STACK_MODE))
    assert "auto (paper on CUDA, light otherwise)" in PRESET.describe()


def test_auto_preset_depends_on_the_device():
    assert resolve_preset("auto", "cuda") == "paper"
    assert resolve_preset("auto", "cpu") == "light" == resolve_preset("auto", "mps")
    assert resolve_preset("paper", "cpu") == "paper"
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_preset("size", "cpu")
