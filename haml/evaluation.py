"""``haml eval RUN_DIR``: evaluate a run's checkpoint with deterministic actions, and render it.

The policies are rebuilt from the checkpoint's own config (so a run evaluates the way it was
trained: same networks, same env options) and run for whole episodes with the Gaussian's mean /
the categorical's mode. ``render=True`` also records one episode to
``RUN_DIR/videos/eval-iter-<iteration>.mp4`` (:data:`VIDEO_NAME`), drawn by the env family's
``episode_frames`` hook (:mod:`haml.envs.registry`; writing MP4 needs imageio-ffmpeg). Where no
video can be made (a family without the hook, no MP4 encoder, no way to draw on this machine),
the evaluation still runs and the report says why no video was written. With ``progress``, the
episodes done and the frames written are reported as they come.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from haml.envs.base import VectorMultiAgentEnv
from haml.runners.evaluate import EvalResult, evaluate

__all__ = ["VIDEO_NAME", "EvalReport", "evaluate_run", "load_policies", "video_path"]


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


def load_policies(checkpoint: dict, spec, device: torch.device, cfg=None):
    """``(config, policies)`` of a loaded run checkpoint: the acting policies built for ``spec`` (an
    env's :class:`~haml.envs.base.EnvSpec`) on ``device``, with the checkpoint's weights, in
    eval mode. ``cfg`` is the checkpoint's config when the caller has already read it.

    For scripts that act with a trained run's policies themselves (``scripts/halfcheetah_flipped.py``).
    """
    from haml.config.loader import config_from_dict
    from haml.models.build import load_policy_weights
    from haml.runners import acting_policies

    if cfg is None:
        cfg = config_from_dict(checkpoint["config"])
    policies = acting_policies(cfg, spec, device)
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
    progress: Callable[[str], None] | None = None,
    env: VectorMultiAgentEnv | None = None,
) -> EvalReport:
    """Evaluate ``run_dir``'s latest checkpoint (or ``checkpoint``) over ``episodes`` episodes
    (``haml.evaluate``).

    ``progress``: called with a line of text as the work advances (episodes done, frames
    written), at most every two seconds; ``haml eval`` prints them to stderr.
    ``env``: evaluate on this environment object, e.g. the one a run was trained on with
    ``haml.train(algo, env)`` (reseeded with ``seed``, left open; the policies go to its device),
    instead of on envs built from the run's config.
    """
    from haml.config.loader import config_from_dict
    from haml.envs.registry import make_env
    from haml.utils.checkpoint import (
        checkpoint_iteration,
        load_latest_run_checkpoint,
        load_run_checkpoint,
    )
    from haml.utils.device import usable_device

    run_dir = Path(run_dir)
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"eval: 'episodes' must be a positive integer, got {episodes!r}")
    if checkpoint is None:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"eval: no run directory {run_dir}")
        try:
            path, state, skipped = load_latest_run_checkpoint(run_dir)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"eval: {err}") from None
        for damaged, why in skipped:
            print(f"eval: {why}; evaluating {path.name} instead", file=sys.stderr, flush=True)
    else:
        path = Path(checkpoint)
        state = load_run_checkpoint(path)
    cfg = config_from_dict(state["config"])
    owns_env = env is None
    if env is None:
        dev = usable_device(device, "device")
        env = make_env(cfg.env.name, cfg.env.task, num_envs=min(episodes, cfg.eval.num_envs),
                       seed=seed, device=dev, **cfg.env.options)
    elif not isinstance(env, VectorMultiAgentEnv):
        raise TypeError(
            f"eval: 'env' must follow haml.envs.VectorMultiAgentEnv, got {type(env).__name__}"
        )
    else:
        dev = env.device
    try:
        _, policies = load_policies(state, env.spec, dev, cfg)
        report_line = _Progress(progress)
        result = evaluate(
            policies, env, episodes, seed=seed,
            on_episode=lambda done, total: report_line(
                f"eval: {done}/{total} episodes", last=done == total
            ),
        )
    finally:
        if owns_env:
            env.close()
    report = EvalReport(
        run_dir=run_dir,
        checkpoint=path,
        iteration=checkpoint_iteration(path) if path.name.startswith("iter-") else -1,
        env_steps=int(state["runner"]["env_steps"]),
        result=result,
    )
    if render:
        report.video, report.video_note = _render_episode(
            cfg, policies, run_dir, report.iteration, seed, _Progress(progress)
        )
    return report


VIDEO_NAME = "eval-iter-{iteration:06d}.mp4"
"""The file ``haml eval --render`` writes under ``RUN_DIR/videos/``: ``eval-iter-<iteration>.mp4``,
the checkpoint's iteration zero-padded to six digits as the checkpoints' own names are."""


def video_path(run_dir: Path, iteration: int) -> Path:
    """Where the video of the checkpoint of ``iteration`` goes: ``RUN_DIR/videos/eval-iter-000050.mp4``."""
    return run_dir / "videos" / VIDEO_NAME.format(iteration=iteration)


class _Progress:
    """Progress lines of long work (``eval: 3/10 episodes``): at most one per ``interval``
    seconds, the last always; nothing without a ``write`` function."""

    def __init__(
        self,
        write: Callable[[str], None] | None,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write = write
        self.interval = interval
        self.clock = clock
        self._time = -float("inf")
        self._line: str | None = None

    def __call__(self, line: str, last: bool = False) -> None:
        now = self.clock()
        due = last or now - self._time >= self.interval
        if self.write is not None and due and line != self._line:
            self._time, self._line = now, line
            self.write(line)


def _video_writer_note() -> str | None:
    """Why an MP4 cannot be written here, or None. Checked before the episode is rendered: a
    whole episode drawn in software takes minutes, which must not end in an encoder error."""
    import importlib.util

    if any(importlib.util.find_spec(package) is None for package in ("imageio", "imageio_ffmpeg")):
        return "writing an MP4 needs imageio and imageio-ffmpeg: pip install imageio imageio-ffmpeg"
    return None


def _deterministic_act(policies: Sequence[torch.nn.Module]) -> Callable[..., list[torch.Tensor]]:
    """Per-agent observations ``[1, obs_dim_i]`` → each policy's deterministic action, computed
    on the policy's device (what a family's ``episode_frames`` hook calls)."""
    devices = [next(policy.parameters()).device for policy in policies]

    @torch.no_grad()
    def act(observations: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [
            policy.sample(obs.to(device), deterministic=True)[0]
            for policy, obs, device in zip(policies, observations, devices)
        ]

    return act


def _counted(frames: Iterator[Any], progress: _Progress) -> Iterator[Any]:
    """``frames``, reporting how many have been written so far."""
    count = 0
    for frame in frames:
        yield frame
        count += 1
        progress(f"render: {count} frames written")
    progress(f"render: {count} frames written", last=True)


def _render_episode(cfg, policies, run_dir: Path, iteration: int, seed: int, progress: _Progress):
    """One deterministic episode rendered to MP4 through the env family's ``episode_frames``
    hook; ``(path, None)`` or ``(None, why not)``."""
    from haml.envs.base import RenderUnavailable
    from haml.envs.registry import build_options, families_with_hook, family_hook, options_class

    frames_of = family_hook(cfg.env.name, "episode_frames")
    if frames_of is None:
        return None, (
            f"the {cfg.env.name} environment cannot render (rendering is available for: "
            f"{', '.join(families_with_hook('episode_frames'))})"
        )
    options = build_options(options_class(cfg.env.name), dict(cfg.env.options))
    progress(f"render: one episode of {cfg.env.name}/{cfg.env.task}", last=True)
    episode = frames_of(cfg.env.task, options, _deterministic_act(policies), seed)
    try:
        try:
            fps = next(episode)  # the first frame is drawn: rendering works here
        except RenderUnavailable as err:
            return None, str(err)
        note = _video_writer_note()
        if note is not None:
            return None, note
        out = video_path(run_dir, iteration)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            _write_video(out, _counted(episode, progress), fps)
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
