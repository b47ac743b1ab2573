"""``haml eval RUN_DIR``: evaluate a run's checkpoint with deterministic actions, and render it.

The policies are rebuilt from the checkpoint's own config (so a run evaluates the way it was
trained: same networks, same env options) and run for whole episodes with the Gaussian's mean /
the categorical's mode. ``render=True`` also records one episode to
``RUN_DIR/videos/eval-iter-<n>.mp4`` with MuJoCo's offscreen renderer; where no renderer works
(a headless machine with neither EGL nor OSMesa), the evaluation still runs and the report says
why no video was written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def _load_policies(checkpoint: dict, spec, device: torch.device):
    from haml.algorithms import algo_spec
    from haml.config.loader import config_from_dict
    from haml.runners.on_policy import make_policies, unique_policies

    cfg = config_from_dict(checkpoint["config"])
    policies, _ = make_policies(algo_spec(cfg.algo_name), cfg, spec, device)
    weights = checkpoint["runner"]["policies"]
    unique = unique_policies(policies)
    if len(weights) != len(unique):
        raise ValueError("the checkpoint's policies do not match its config")
    for policy, state in zip(unique, weights):
        policy.load_state_dict(state)
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
    from haml.utils.checkpoint import checkpoint_iteration, latest_checkpoint, load_checkpoint

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
    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"])
    dev = torch.device(device)
    num_envs = min(episodes, cfg.eval.num_envs)
    env = make_env(cfg.env.name, cfg.env.task, num_envs=num_envs, seed=seed, device=dev,
                   **cfg.env.options)
    try:
        _, policies = _load_policies(state, env.spec, dev)
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


def _render_episode(cfg, policies, run_dir: Path, iteration: int, seed: int):
    """One deterministic episode rendered to MP4; ``(path, None)`` or ``(None, why not)``."""
    from haml.envs.registry import make_env

    try:
        env = make_env(cfg.env.name, cfg.env.task, num_envs=1, seed=seed, device="cpu",
                       render_mode="rgb_array", **cfg.env.options)
    except (TypeError, ValueError) as err:
        return None, f"the {cfg.env.name} environment cannot render ({err})"
    frames = []
    try:
        step = env.reset(seed=seed)
        limit = env.spec.episode_limit or 1000
        for _ in range(limit):
            try:
                frames.append(env.render())
            except Exception as err:  # no OpenGL context on a headless machine, typically
                return None, (
                    f"MuJoCo's offscreen renderer failed ({type(err).__name__}: {err}); on a "
                    f"headless machine set MUJOCO_GL=egl (GPU) or MUJOCO_GL=osmesa"
                )
            actions = []
            with torch.no_grad():
                for i, policy in enumerate(policies):
                    action, _ = policy.sample(step.obs[i].cpu(), deterministic=True)
                    actions.append(action)
            step = env.step(actions)
            if step.episodes:
                break
    finally:
        env.close()
    try:
        import imageio.v2 as imageio
    except ImportError:
        return None, "writing a video needs imageio (pip install imageio imageio-ffmpeg)"
    out = run_dir / "videos" / f"eval-iter-{iteration:06d}.mp4"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        imageio.mimwrite(out, frames, fps=int(1 / 0.05))
    except Exception as err:  # imageio without an ffmpeg backend
        return None, f"could not encode the video ({err}); pip install imageio-ffmpeg"
    return out, None
