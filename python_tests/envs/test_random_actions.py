"""haml.envs.random_actions: the warm-up's and the random baseline's action draws."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from haml.envs.random_actions import random_action_sampler

E = 2000


def test_every_draw_lies_in_its_box_and_unbounded_dimensions_get_a_width_two_interval():
    inf = np.inf
    box = spaces.Box(low=np.array([-1.0, 2.0, -inf, -inf], dtype=np.float32),
                     high=np.array([3.0, inf, 5.0, inf], dtype=np.float32))
    (a,) = random_action_sampler([box], E, "cpu")(None)
    assert a.shape == (E, 4) and a.dtype == torch.float32
    lows = torch.tensor([-1.0, 2.0, 3.0, -1.0])
    highs = torch.tensor([3.0, 4.0, 5.0, 1.0])
    assert bool((a >= lows).all() and (a <= highs).all())
    # spread over the whole interval, not squeezed near one end
    assert bool((a.min(0).values < lows + 0.1).all() and (a.max(0).values > highs - 0.1).all())


def test_discrete_draws_only_available_actions():
    space = spaces.Discrete(5, start=1)
    mask = torch.zeros(E, 5, dtype=torch.bool)
    mask[:, 3] = True
    mask[: E // 2, 0] = True
    (a,) = random_action_sampler([space], E, "cpu")([mask])
    assert a.dtype == torch.int64 and a.shape == (E,)
    assert set(a[E // 2:].tolist()) == {4}
    assert set(a[: E // 2].tolist()) == {1, 4}
    (free,) = random_action_sampler([space], E, "cpu")(None)
    assert set(free.tolist()) == {1, 2, 3, 4, 5}


def test_the_global_rng_or_a_generator_makes_draws_repeat():
    box = spaces.Box(-1.0, 1.0, (3,))
    torch.manual_seed(7)
    first = random_action_sampler([box], 4, "cpu")()[0]
    torch.manual_seed(7)
    assert torch.equal(random_action_sampler([box], 4, "cpu")()[0], first)
    gen = torch.Generator().manual_seed(1)
    own = random_action_sampler([box], 4, "cpu", generator=gen)()[0]
    torch.manual_seed(7)  # the global stream does not enter
    assert torch.equal(
        random_action_sampler([box], 4, "cpu", generator=torch.Generator().manual_seed(1))()[0], own
    )


def test_other_spaces_are_refused():
    with pytest.raises(TypeError, match="neither Box nor Discrete"):
        random_action_sampler([spaces.MultiBinary(3)], 2, "cpu")
