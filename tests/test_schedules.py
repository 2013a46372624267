"""Noise schedules: rates are derivatives of the integrated noise, alpha = exp(-sigma_bar), boundary values.

Tolerances: float64 throughout; autograd identities to 1e-10 relative, central finite differences
(h = 1e-6) to 1e-7 relative, hand-computed values to 1e-12.
"""

from __future__ import annotations

import math

import pytest
import torch

from sepo.diffusion import Cosine, Geometric, LogLinear, make_schedule
from sepo.diffusion.schedules import schedule_from_config

SCHEDULES = [
    LogLinear(eps=1e-3),
    LogLinear(eps=0.0),
    LogLinear(eps=0.3),
    Geometric(),
    Geometric(sigma_min=1e-2, sigma_max=5.0),
    Cosine(eps=1e-3),
    Cosine(eps=0.0),
]
IDS = [f"{s.name}-{i}" for i, s in enumerate(SCHEDULES)]
T = torch.linspace(0.01, 0.99, 41, dtype=torch.float64)


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
def test_sigma_is_derivative_of_sigma_bar(sched):
    t = T.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(sched.sigma_bar(t).sum(), t)
    torch.testing.assert_close(sched.sigma(T), grad, rtol=1e-10, atol=0.0)
    h = 1e-6
    fd = (sched.sigma_bar(T + h) - sched.sigma_bar(T - h)) / (2 * h)
    torch.testing.assert_close(sched.sigma(T), fd, rtol=1e-7, atol=1e-9)
    assert (sched.sigma(T) > 0).all()


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
def test_alpha_and_its_derivative(sched):
    torch.testing.assert_close(sched.alpha(T), torch.exp(-sched.sigma_bar(T)), rtol=1e-12, atol=0.0)
    torch.testing.assert_close(sched.dalpha(T), -sched.sigma(T) * sched.alpha(T), rtol=1e-10, atol=0.0)
    t = T.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(sched.alpha(t).sum(), t)
    torch.testing.assert_close(sched.dalpha(T), grad, rtol=1e-10, atol=1e-14)
    a = sched.alpha(T)
    assert ((a > 0) & (a <= 1)).all() and (a[1:] < a[:-1]).all(), "alpha must decrease strictly inside (0, 1]"


def test_boundary_values():
    zero, one = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    for eps in (0.0, 1e-3, 0.3):
        for sched in (LogLinear(eps=eps), Cosine(eps=eps)):
            assert float(sched.alpha(zero)) == pytest.approx(1.0, abs=1e-15)
            assert float(sched.sigma_bar(zero)) == pytest.approx(0.0, abs=1e-15)
            assert float(sched.alpha(one)) == pytest.approx(eps, abs=1e-15)
    geo = Geometric(sigma_min=1e-4, sigma_max=20.0)
    assert float(geo.alpha(zero)) == pytest.approx(math.exp(-1e-4), rel=1e-14)
    assert float(geo.alpha(one)) == pytest.approx(math.exp(-20.0), rel=1e-12)
    # eps = 0: fully noised at t = 1 and an infinite rate there (documented)
    assert math.isinf(float(LogLinear(eps=0.0).sigma(one)))


def test_hand_computed_values():
    t = torch.tensor(0.5, dtype=torch.float64)
    ll = LogLinear(eps=0.1)  # alpha = 1 - 0.9 t
    assert float(ll.alpha(t)) == pytest.approx(0.55, abs=1e-12)
    assert float(ll.sigma(t)) == pytest.approx(0.9 / 0.55, abs=1e-12)
    assert float(ll.dalpha(t)) == pytest.approx(-0.9, abs=1e-12)
    cos = Cosine(eps=0.0)  # alpha = cos(pi t / 2), sigma = (pi/2) tan(pi t / 2)
    assert float(cos.alpha(t)) == pytest.approx(math.sqrt(0.5), abs=1e-12)
    assert float(cos.sigma(t)) == pytest.approx(math.pi / 2, abs=1e-12)
    geo = Geometric(sigma_min=1e-2, sigma_max=1e2)  # sigma_bar(1/2) = 1, sigma = log(1e4) sigma_bar
    assert float(geo.sigma_bar(t)) == pytest.approx(1.0, abs=1e-12)
    assert float(geo.sigma(t)) == pytest.approx(math.log(1e4), abs=1e-12)
    assert float(geo.alpha(t)) == pytest.approx(math.exp(-1.0), abs=1e-12)


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
def test_shapes_dtypes_and_config_round_trip(sched):
    t32 = torch.rand(4, 5)
    for fn in (sched.sigma_bar, sched.sigma, sched.alpha, sched.dalpha):
        out = fn(t32)
        assert out.shape == (4, 5) and out.dtype == torch.float32
    again = schedule_from_config(sched.to_config())
    assert type(again) is type(sched)
    torch.testing.assert_close(again.sigma_bar(T), sched.sigma_bar(T), rtol=0, atol=0)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: LogLinear(eps=1.0), "eps must be in"),
        (lambda: LogLinear(eps=-0.1), "eps must be in"),
        (lambda: Cosine(eps=1.5), "eps must be in"),
        (lambda: Geometric(sigma_min=0.0), "sigma_min < sigma_max"),
        (lambda: Geometric(sigma_min=5.0, sigma_max=1.0), "sigma_min < sigma_max"),
        (lambda: make_schedule("sqrt"), "unknown noise schedule 'sqrt'"),
    ],
)
def test_bad_parameters_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()
