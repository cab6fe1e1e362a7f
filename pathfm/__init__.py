"""pathfm: pathology foundation models in the Hugging Face ecosystem.

Importing ``pathfm`` registers the ``pathfm_vit`` model type with the transformers Auto classes.
"""

__version__ = "0.1.0"

from pathfm.modeling import register_auto_classes as _register

_register()

