"""The Feast repo's definitions for the ``feast`` CLI.

From the repository root: ``uv run feast -c features apply`` (or ``plan``, ``ui``...).

Feast imports every ``.py`` of this folder as a top-level module and collects the Feast objects
it finds; they are built by :func:`cartwise.features.definitions.build` from the
``CARTWISE_*`` settings, the same objects ``cartwise features apply`` applies.
"""

from cartwise.features.definitions import build
from cartwise.features.settings import REPO_PATH, get_feature_settings
from cartwise.features.store import ensure_tables

_settings = get_feature_settings()
# The feast CLI runs from this folder; relative CARTWISE_ paths mean the repository root.
_update = {
    key: REPO_PATH.parent / value
    for key, value in (("var_dir", _settings.var_dir), ("features_dir", _settings.features_dir))
    if value is not None and not value.is_absolute()
}
_settings = _settings.model_copy(update=_update)
# The registry folder and (possibly empty) feature tables must exist before Feast reads them.
ensure_tables(_settings)
for _obj in build(_settings):
    globals()[_obj.name] = _obj
