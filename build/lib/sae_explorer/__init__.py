"""sae-explorer: explore what (Matryoshka) sparse autoencoders find inside CLIP.

The library never imports gradio; ``app.py`` builds the web page on top of it.
"""

from sae_explorer.checkpoints import load_sae, save_sae
from sae_explorer.sae import SAE, SAEConfig

__all__ = ["SAE", "SAEConfig", "load_sae", "save_sae"]
__version__ = "0.1.0"
