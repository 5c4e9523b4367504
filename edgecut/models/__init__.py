"""Models: the teacher U-Net, the MobileNet students, U^2-Net, their registry, channel configurations and
loading. Importing the package imports every builder module, so the registry (which imports none of
them) knows every architecture."""

import edgecut.models.students  # noqa: F401  (their @register_model decorators run)
import edgecut.models.u2net  # noqa: F401
import edgecut.models.unet  # noqa: F401
