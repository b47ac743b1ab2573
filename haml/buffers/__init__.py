"""Rollout storage of the on-policy runner."""
