"""Reusable test suites (pytest): the physics every model must obey (``physics.ModelPhysics``) and the
small structures it runs on (``structures``), for sevenomni's own tests and a user's architecture variant."""
