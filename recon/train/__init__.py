"""Training: losses, the LightningModule, the clip LightningDataModule, truncated backprop, callbacks.

``recon train {fit,validate,test} --config configs/train/<recipe>.yaml`` drives them (LightningCLI);
see docs/training.md.
"""
