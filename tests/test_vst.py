"""Poisson-Gaussian noise: the generalised Anscombe transform, its unbiased inverse, 'auto'."""

import numpy as np
import pytest

from napari_dip.engine.noise import estimate_noise
from napari_dip.engine.vst import Anscombe, choose_noise_model


def _photons(load, peak: float) -> np.ndarray:
    """A real nuclei crop as Poisson means from 1 to ``peak`` photons (smoothed: no noise of its
    own), tiled to 128x128 so the noise fit has enough pixels."""
    from skimage.filters import gaussian

    clean = gaussian(load("nuclei_64_uint16.tif").astype(np.float64), 1.0)
    return np.tile(1 + (peak - 1) * (clean - clean.min()) / np.ptp(clean), (2, 2))


def test_unbiased_inverse_recovers_low_count_means_where_the_algebraic_one_fails():
    gain, read = 0.01, 0.0004  # normalised units: 100 photons span [0, 1]
    vst = Anscombe((gain,), (read,))
    rng = np.random.default_rng(0)
    for photons in (0.5, 2.0, 5.0, 30.0):
        z = gain * rng.poisson(photons, 400_000) + rng.normal(0, np.sqrt(read), 400_000)
        mean_f = vst.forward(z[None]).mean()
        exact = vst.unbiased_inverse(np.array([[mean_f]]))[0, 0]
        assert exact == pytest.approx(gain * photons, rel=0.02, abs=2e-4)
        # the algebraic inverse of the same value is off by about a quarter photon or more
        lo, hi = vst._ends()
        f = mean_f * (hi[0] - lo[0]) + lo[0]
        algebraic = ((f * gain / 2) ** 2 - 0.375 * gain**2 - read) / gain
        if photons <= 5:
            assert abs(algebraic - gain * photons) > 0.2 * gain


def test_forward_maps_the_range_to_unit_interval_and_round_trips_clean_values():
    vst = Anscombe((0.02, 0.005), (0.001, -0.0001))
    x = np.linspace(0, 1, 11)[None].repeat(2, 0)
    t = vst.forward(x)
    np.testing.assert_allclose(t[:, 0], 0, atol=1e-6)
    np.testing.assert_allclose(t[:, -1], 1, atol=1e-6)
    assert np.all(np.diff(t, axis=1) > 0)
    import torch

    np.testing.assert_allclose(vst.forward_torch(torch.from_numpy(x)[None].double())[0].numpy(),
                               t, atol=1e-6)


def test_stabilised_noise_has_the_variance_the_model_predicts(load):
    photons = _photons(load, 60)
    rng = np.random.default_rng(1)
    gain = 1 / 80  # the image's units: 80 photons = 1
    noisy = gain * rng.poisson(photons) + rng.normal(0, 0.01, photons.shape)
    est = estimate_noise(noisy[None])
    vst = Anscombe.from_estimate(est)
    assert vst.gain[0] == pytest.approx(gain, rel=0.25)
    stabilised = estimate_noise(vst.forward(noisy[None]))
    # flat after the transform (no slope left) and at the level the stopping rule is given
    assert stabilised.mean_variance == pytest.approx(vst.noise_variance, rel=0.15)
    lo, hi = np.percentile(photons, [10, 90])
    t = vst.forward(noisy[None])[0]
    resid_dim = np.var(t[photons < lo] - vst.forward((gain * photons)[None])[0][photons < lo])
    resid_bright = np.var(t[photons > hi] - vst.forward((gain * photons)[None])[0][photons > hi])
    assert 0.7 < resid_bright / resid_dim < 1.4


def test_auto_picks_poisson_gaussian_on_shot_noise_and_gaussian_on_gaussian_noise(load):
    rng = np.random.default_rng(2)
    photons = _photons(load, 40)
    shot = rng.poisson(photons) / 45.0
    choice = choose_noise_model("auto", estimate_noise(shot[None]), shot[None])
    assert choice.model == "poisson-gaussian", choice.reason
    assert choice.to_dict()["gain"][0] > 0

    f16 = load("f16_64.png").astype(np.float64).mean(-1) / 255
    f16 = np.tile(f16, (2, 2))
    gauss = f16 + rng.normal(0, 0.08, f16.shape)
    choice = choose_noise_model("auto", estimate_noise(gauss[None]), gauss[None])
    assert choice.model == "gaussian", choice.reason


def test_poisson_gaussian_asked_for_without_shot_noise_is_a_clear_error():
    rng = np.random.default_rng(3)
    flat = 0.5 + rng.normal(0, 0.05, (1, 128, 128))
    est = estimate_noise(flat)
    est = type(est)(est.variance, (0.0,), est.offset)
    with pytest.raises(ValueError, match="use noise model 'gaussian'"):
        choose_noise_model("poisson-gaussian", est, flat, name="layer 'cells'")


def test_a_noise_model_choice_and_a_headroom_read_back_from_their_records(load):
    # A resumed run takes both from its ledger (JSON) and must restore exactly as before.
    import json

    from napari_dip.engine.operators import Headroom

    img = _photons(load, 20.0)
    cyx = img[None] / img.max()
    choice = choose_noise_model("auto", estimate_noise(cyx), cyx.reshape(1, -1))
    back = type(choice).from_dict(json.loads(json.dumps(choice.to_dict())))
    assert back.model == choice.model and back.estimate == choice.estimate
    np.testing.assert_array_equal(back.anscombe().forward(cyx), choice.anscombe().forward(cyx))
    room = Headroom((25.1, 1.0), (2.4, 1.1))
    assert Headroom.from_dict(json.loads(json.dumps(room.to_dict()))) == room


def test_auto_says_gaussian_because_a_channel_has_no_shot_noise_not_because_it_is_flat():
    """A channel without shot noise (fitted gain 0) keeps the Gaussian data term; the reason
    names it instead of calling a 30x growth 'about constant'."""
    from napari_dip.engine.noise import NoiseEstimate
    from napari_dip.engine.vst import choose_noise_model

    ramp = np.broadcast_to(np.linspace(0.05, 0.95, 64), (2, 64, 64))
    estimate = NoiseEstimate(variance=(1e-3, 1e-3), gain=(0.0, 0.01), offset=(1e-3, 1e-6))
    choice = choose_noise_model("auto", estimate, ramp)
    assert choice.model == "gaussian" and choice.std_ratio > 1.5
    assert choice.reason == "the noise does not grow with intensity in channel(s) 0 (fitted gain 0)"


def test_the_algebraic_inverse_undoes_the_transform_below_the_floor_too():
    import torch

    a = Anscombe((0.01, 0.002), (1e-4, -2e-4))  # read noise, and a black level
    x = torch.linspace(-0.2, 1.5, 200, dtype=torch.float64).expand(1, 2, 200).contiguous()
    assert torch.allclose(a.inverse_torch(a.forward_torch(x)), x, atol=1e-9)
