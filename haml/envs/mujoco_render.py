"""Drawing a MuJoCo episode offscreen: the OpenGL set-up and the frame loop behind MaMuJoCo's
``episode_frames`` hook (:func:`haml.envs.mamujoco.episode_frames`).

The robot's own gymnasium renderer draws the frames, with the robot's tracking camera. On a
headless Linux machine where the user set no ``MUJOCO_GL``, MuJoCo would pick GLFW, which needs a
display: EGL is used instead while the renderer opens its context (:func:`offscreen_gl`). When no
OpenGL context can be opened, :class:`~haml.envs.base.RenderUnavailable` says why and which
``MUJOCO_GL`` to set.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from haml.envs.base import RenderUnavailable
from haml.envs.gym_adapter import ParallelEnvAdapter, obs_key

__all__ = ["headless_linux", "mujoco_gl_hint", "offscreen_gl", "render_episode"]

Act = Callable[[Sequence[torch.Tensor]], Sequence[torch.Tensor]]
"""Per-agent observations ``[1, obs_dim_i]`` (float32, CPU) → per-agent actions ``[1, d_i]``."""


def headless_linux() -> bool:
    """Linux without MUJOCO_GL and without a display: MuJoCo would pick GLFW, which fails."""
    return sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and (
        "MUJOCO_GL" not in os.environ
    )


@contextlib.contextmanager
def offscreen_gl(headless: bool) -> Iterator[None]:
    """While the renderer opens its OpenGL context: EGL instead of GLFW on a headless Linux
    machine where the user chose nothing (gymnasium's viewer reads MUJOCO_GL when it opens, and
    PyOpenGL reads PYOPENGL_PLATFORM when first imported; both are restored afterwards)."""
    if not headless:
        yield
        return
    saved = {key: os.environ.get(key) for key in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    os.environ["MUJOCO_GL"] = "egl"
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def mujoco_gl_hint(err: Exception, headless: bool) -> str:
    """The renderer's failure and what to do about it, from MUJOCO_GL and DISPLAY."""
    if headless:
        setting = "no display and MUJOCO_GL unset, so EGL was tried, and it does not work here"
    else:
        gl = os.environ.get("MUJOCO_GL")
        setting = (
            f"MUJOCO_GL={gl!r} does not work here" if gl is not None
            else "MUJOCO_GL is unset, so GLFW was used, which needs a working display"
        )
    return (
        f"MuJoCo's offscreen renderer failed ({type(err).__name__}: {err}); {setting}. On a "
        "headless machine set MUJOCO_GL=egl (needs libEGL: a GPU driver or Mesa) or "
        "MUJOCO_GL=osmesa (needs libOSMesa) before starting"
    )


@contextlib.contextmanager
def _quiet_unraisable() -> Iterator[None]:
    """gymnasium's viewer whose OpenGL context failed to open complains again from ``__del__``
    ("Exception ignored in ..."); the failure is reported once, by :class:`RenderUnavailable`."""
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook = previous


def render_episode(env: ParallelEnvAdapter, act: Act, seed: int) -> Iterator[Any]:
    """One episode of ``env`` (a MaMuJoCo adapter, closed at the end) with ``act`` choosing the
    actions: yields the frame rate, then the frames as they are drawn (a whole episode's frames
    would not fit in memory at once).

    The first frame is drawn before the frame rate is yielded, so that a missing OpenGL backend
    is a :class:`RenderUnavailable` before the caller opens any file. Actions are clipped to the
    action spaces' bounds, as :class:`~haml.envs.vector.GymVectorEnv` clips them in training.
    """
    robot = env.parallel_env.single_agent_env.unwrapped
    renderer = robot.mujoco_renderer
    bounds = [
        (torch.as_tensor(space.low).float(), torch.as_tensor(space.high).float())
        for space in env.action_space.spaces
    ]
    n_agents = len(bounds)
    try:
        obs, _ = env.reset(seed=seed)
        headless = headless_linux()
        with _quiet_unraisable(), offscreen_gl(headless):
            try:
                frame = renderer.render("rgb_array")
            except Exception as err:  # no OpenGL context: no display, no EGL/OSMesa
                raise RenderUnavailable(mujoco_gl_hint(err, headless)) from None
        yield float(robot.metadata.get("render_fps") or round(1.0 / robot.dt))
        yield frame
        while True:
            observations = [
                torch.as_tensor(obs[obs_key(i)], dtype=torch.float32).unsqueeze(0)
                for i in range(n_agents)
            ]
            actions = tuple(
                torch.clamp(action[0].float().cpu(), low, high).numpy()
                for action, (low, high) in zip(act(observations), bounds)
            )
            obs, _, terminated, truncated, _ = env.step(actions)
            yield renderer.render("rgb_array")
            if terminated or truncated:
                return
    finally:
        with _quiet_unraisable(), contextlib.suppress(Exception):
            renderer.close()
        env.close()
