"""``edgecut import``: a user's own model file in, an artifact out, its spec given or measured.

:mod:`edgecut.intake.config` holds the settings (light: no torch); :mod:`edgecut.intake.importer`
the front function :func:`~edgecut.intake.importer.import_model`.
"""
