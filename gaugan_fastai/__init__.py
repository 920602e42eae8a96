"""GauGAN / SPADE semantic image synthesis (label map -> photo) with fastai: a library and a series of teaching notebooks

Modules:

- `gaugan_fastai.core`: Small helpers every other notebook uses: choosing the device, the precision to compute in, reproducible random numbers, plain tensors out of fastai's typed ones, and finding the optional real data sets."""

__version__ = "0.0.1"
