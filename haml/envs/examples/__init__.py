"""Small PettingZoo environments written the way a user writes one, for haml's ``pettingzoo``
family: ``meet`` is the example of ``docs/envs/custom.md`` (shown there verbatim) and the family's
default task."""
