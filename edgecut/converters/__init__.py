"""Converters that cannot live beside edgecut's pinned packages, and the environments they run in
(:mod:`edgecut.converters.envs`); each environment's pins are a ``NAME.txt`` beside it."""
