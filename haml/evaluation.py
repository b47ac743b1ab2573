"""``haml eval RUN_DIR``: evaluate a run's checkpoint with deterministic actions, and render it.

The policies are rebuilt from the checkpoint's own config (so a run evaluates the way it was
trained: same networks, same env options) and run for whole episodes with the Gaussian's mean /
the categorical's mode. ``render=True`` also records one episode to
``RUN_DIR/videos/eval-iter-<n>.mp4`` with MuJoCo's offscreen renderer (MaMuJoCo tasks; writing
MP4 needs imageio-ffmpeg). Where no video can be made (an env family that cannot render, no MP4
encoder, a headless machine with neither EGL nor OSMesa), the evaluation still runs and the
report says why no video was written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from haml.runners.evaluate import EvalResult, evaluate

__all__ = ["EvalReport", "evaluate_run"]


@dataclass
class EvalReport:
    run_dir: Path
    checkpoint: Path
    iteration: int
    env_steps: int
    result: EvalResult
    video: Path | None = None
    video_note: str | None = None

    def summary(self) -> str:
        r = self.result
        lines = [
            f"{self.run_dir}: checkpoint {self.checkpoint.name} (iteration {self.iteration}, "
            f"{self.env_steps} steps)",
            f"eval return over {len(r.episodes)} episodes (deterministic): "
            f"{r.mean_return:.2f} ± {r.std_return:.2f}",
        ]
        for key, value in r.metrics.items():
            lines.append(f"  {key}: {value:.3f}")
        if self.video is not None:
            lines.append(f"video: {self.video}")
        elif self.video_note is not None:
            lines.append(f"no video: {self.video_note}")
        return "\n".join(lines)


def _load_policies(checkpoint: dict, spec, device: torch.device, cfg=None):
    """``(config, policies)`` of a checkpoint, the policies built for ``spec`` with its weights;
    ``cfg`` is the checkpoint's config when the caller has already read it."""
    from haml.algorithms import algo_spec
    from haml.config.loader import config_from_dict
    from haml.models.build import build_policies, load_policy_weights

    if cfg is None:
        cfg = config_from_dict(checkpoint["config"])
    algo = algo_spec(cfg.algo_name)
    policies, _ = build_policies(cfg.actor, spec.obs_spaces, spec.action_spaces, device,
                                 share=algo.share_actors, owner=algo.name)
    load_policy_weights(policies, checkpoint["runner"]["policies"])
    for policy in policies:
        policy.eval()
    return cfg, policies


def evaluate_run(
    run_dir: str | Path,
    episodes: int = 10,
    render: bool = False,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
) -> EvalReport:
    """Evaluate ``run_dir``'s latest checkpoint (or ``checkpoint``) over ``episodes`` episodes."""
    from haml.config.loader import config_from_dict
    from haml.envs.registry import make_env
    from haml.utils.checkpoint import checkpoint_iteration, latest_checkpoint, load_run_checkpoint

    run_dir = Path(run_dir)
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"eval: 'episodes' must be a positive integer, got {episodes!r}")
    if checkpoint is None:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"eval: no run directory {run_dir}")
        path = latest_checkpoint(run_dir)
        if path is None:
            raise FileNotFoundError(f"eval: {run_dir} holds no checkpoint (checkpoints/iter-*.pt)")
    else:
        path = Path(checkpoint)
    state = load_run_checkpoint(path)
    cfg = config_from_dict(state["config"])
    dev = torch.device(device)
    num_envs = min(episodes, cfg.eval.num_envs)
    env = make_env(cfg.env.name, cfg.env.task, num_envs=num_envs, seed=seed, device=dev,
                   **cfg.env.options)
    try:
        _, policies = _load_policies(state, env.spec, dev, cfg)
        result = evaluate(policies, env, episodes, seed=seed)
    finally:
        env.close()
    report = EvalReport(
        run_dir=run_dir,
        checkpoint=path,
        iteration=checkpoint_iteration(path) if path.name.startswith("iter-") else -1,
        env_steps=int(state["runner"]["env_steps"]),
        result=result,
    )
    if render:
        report.video, report.video_note = _render_episode(cfg, policies, run_dir, report.iteration, seed)
    return report


class _RenderUnavailable(Exception):
    """Why no frames could be rendered (becomes the report's ``video_note``)."""


def _video_writer_note() -> str | None:
    """Why an MP4 cannot be written here, or None. Checked before the episode is rendered: a
    whole episode in software (EGL on llvmpipe) takes minutes, which must not end in an encoder
    error."""
    import importlib.util

    if any(importlib.util.find_spec(package) is None for package in ("imageio", "imageio_ffmpeg")):
        return "writing an MP4 needs imageio and imageio-ffmpeg: pip install imageio imageio-ffmpeg"
    return None


def _headless_linux() -> bool:
    """Linux without MUJOCO_GL and without a display: MuJoCo would pick GLFW, which fails."""
    import os
    import sys

    return sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and (
        "MUJOCO_GL" not in os.environ
    )


@contextlib.contextmanager
def _offscreen_gl(headless: bool):
    """While the renderer opens its OpenGL context: EGL instead of GLFW on a headless Linux
    machine where the user chose nothing (gymnasium's viewer reads MUJOCO_GL when it opens, and
    PyOpenGL reads PYOPENGL_PLATFORM when first imported; both are restored afterwards)."""
    import os

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


def _mujoco_gl_hint(err: Exception, headless: bool) -> str:
    """The renderer's failure and what to do about it, from MUJOCO_GL and DISPLAY."""
    import os

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
def _quiet_unraisable():
    """gymnasium's viewer whose OpenGL context failed to open complains again from ``__del__``
    ("Exception ignored in ..."); the failure is reported once, in the note."""
    import gc
    import sys

    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook = previous


def _mamujoco_frames(cfg, policies, seed: int) -> Iterator[Any]:
    """One deterministic episode of a MaMuJoCo task: yields the frame rate, then the frames as
    they are drawn (a 1000-step episode would hold ~700 MB of frames at once).

    The robot's own gymnasium renderer draws them (with the robot's tracking camera; through EGL
    on a headless Linux machine where MUJOCO_GL is unset, see :func:`_offscreen_gl`); the episode
    runs in this process on one env built from the run's options. The first frame is drawn before the frame rate is yielded, so that a
    missing OpenGL backend is a :class:`_RenderUnavailable` before any file is opened.
    """
    from haml.envs.gym_adapter import obs_key
    from haml.envs.mamujoco import Options, make_single_env
    from haml.envs.registry import build_options

    env = make_single_env(cfg.env.task, build_options(Options, dict(cfg.env.options)))
    robot = env.parallel_env.single_agent_env.unwrapped
    renderer = robot.mujoco_renderer
    bounds = [
        (torch.as_tensor(space.low).float(), torch.as_tensor(space.high).float())
        for space in env.action_space.spaces
    ]
    devices = [next(policy.parameters()).device for policy in policies]
    try:
        obs, _ = env.reset(seed=seed)
        headless = _headless_linux()
        with _quiet_unraisable(), _offscreen_gl(headless):
            try:
                frame = renderer.render("rgb_array")
            except Exception as err:  # no OpenGL context: no display, no EGL/OSMesa
                raise _RenderUnavailable(_mujoco_gl_hint(err, headless)) from None
        yield float(robot.metadata.get("render_fps") or round(1.0 / robot.dt))
        yield frame
        while True:
            actions = []
            with torch.no_grad():
                for i, policy in enumerate(policies):
                    x = torch.as_tensor(obs[obs_key(i)], dtype=torch.float32, device=devices[i])
                    action, _ = policy.sample(x.unsqueeze(0), deterministic=True)
                    low, high = bounds[i]
                    actions.append(torch.clamp(action[0].float().cpu(), low, high).numpy())
            obs, _, terminated, truncated, _ = env.step(tuple(actions))
            yield renderer.render("rgb_array")
            if terminated or truncated:
                return
    finally:
        with _quiet_unraisable(), contextlib.suppress(Exception):
            renderer.close()
        env.close()


_FRAME_SOURCES: dict[str, Callable[..., Iterator[Any]]] = {"mamujoco": _mamujoco_frames}
"""Env families that can render an evaluation episode: ``(cfg, policies, seed)`` → an iterator
yielding the frame rate, then ``[H, W, 3]`` uint8 frames. (A render hook of the env families
themselves would be the general home of this.)"""


def _render_episode(cfg, policies, run_dir: Path, iteration: int, seed: int):
    """One deterministic episode rendered to MP4; ``(path, None)`` or ``(None, why not)``."""
    source = _FRAME_SOURCES.get(cfg.env.name)
    if source is None:
        return None, (
            f"the {cfg.env.name} environment cannot render (rendering is available for: "
            f"{', '.join(sorted(_FRAME_SOURCES))})"
        )
    episode = source(cfg, policies, seed)
    try:
        try:
            fps = next(episode)  # the first frame is drawn: OpenGL works
        except _RenderUnavailable as err:
            return None, str(err)
        note = _video_writer_note()
        if note is not None:
            return None, note
        out = run_dir / "videos" / f"eval-iter-{iteration:06d}.mp4"
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            _write_video(out, episode, fps)
        except Exception as err:  # e.g. an imageio without a working ffmpeg backend
            out.unlink(missing_ok=True)
            return None, f"could not write the video ({type(err).__name__}: {err})"
        return out, None
    finally:
        episode.close()


def _write_video(path: Path, frames: Iterable[np.ndarray], fps: float) -> None:
    """Frames → MP4 at ``path``, one frame at a time."""
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=fps) as writer:
        for frame in frames:
            writer.append_data(frame)
