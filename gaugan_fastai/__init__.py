"""GauGAN / SPADE semantic image synthesis (label map -> photo) with fastai: a library and a series of teaching notebooks

Modules:

- `gaugan_fastai.bench`: What a training run costs on this machine: training images per second, peak memory, and the latency of generating one image, for any GauGAN configuration, on synthetic batches already on the device.
- `gaugan_fastai.cli`: `gaugan-train`, `gaugan-generate`, `gaugan-demo`, `gaugan-bench` and `gaugan-evaluate`: the library's main jobs from a shell, with progress bars, and one-line errors for bad input.
- `gaugan_fastai.core`: Small helpers every other notebook uses: choosing the device, the precision to compute in, reproducible random numbers, plain tensors out of fastai's typed ones, images as 8-bit pixels, threads when notebooks run side by side, and finding the optional real data sets and fixtures.
- `gaugan_fastai.data`: Label map -> photo pairs as fastai `DataLoaders`: reading label maps, instance maps and photos (Pillow formats and GeoTIFF), checking and pairing files, augmentation that keeps the pair aligned, the one-hot network input, display and GeoTIFF output. The data sets' own layouts are in `gaugan_fastai.formats`.
- `gaugan_fastai.demo`: `run_demo`, what `gaugan-demo` runs: generate the land-cover demo set, train a small GauGAN on it on a CPU in minutes, and write sample pictures, the loss curves, the exported model and a report with the class-colour fidelity it reached.
- `gaugan_fastai.discriminator`: The critic of SPADE: two PatchGAN discriminators looking at the label map and the image together, one at full and one at half resolution, returning every intermediate feature map so that the generator can match them.
- `gaugan_fastai.ema`: An exponential moving average (EMA) of the generator's weights, for making images: what it is, why its batch-norm statistics must be estimated again, and the callback that keeps it during training.
- `gaugan_fastai.encoder`: GauGAN's optional image encoder: it reads a photo and returns the mean and log-variance of a style code `z`, from which the generator paints the label map "in the style of" that photo.
- `gaugan_fastai.formats`: The one registry of the data layouts gaugan_fastai reads: plain folders, CMP Facades (raw and pix2pix layouts), ArcGIS land-cover exports, and the generated land-cover demo set. Each layout is one entry: its name, how to recognise it, its loader and a description.
- `gaugan_fastai.generator`: GauGAN's generator: a stack of SPADE residual blocks that starts from a tiny feature map and upsamples it to the image size, re-injecting the label map at every scale.
- `gaugan_fastai.inference`: Generating images from label maps with a trained model: several styles per map, style from an example photo, label files read the way the training data's were, a small exported model file that loads without fastai's `Learner`, and GeoTIFF output.
- `gaugan_fastai.layers`: Spatially-adaptive normalization (SPADE), its cheaper class-adaptive variant (CLADE), the SPADE residual block, spectral normalization that stays in float32 under mixed precision, and the reference weight initialization.
- `gaugan_fastai.learner`: `gaugan_learner`: a fastai `Learner` that trains GauGAN (SPADE), CLADE or the pix2pix baseline on paired (label map, photo) batches, built on fastai's GAN machinery, with the reference's losses, TTUR, checkpoints and mixed precision.
- `gaugan_fastai.losses`: The four terms SPADE trains with: the hinge adversarial loss (for the discriminator and for the generator), discriminator feature matching, the VGG19 perceptual loss, and the KL divergence of the style encoder.
- `gaugan_fastai.metrics`: How good are the synthesised images? The segmentation score of the SPADE paper (mIoU, pixel accuracy), FID and KID with the standard Inception weights, a Fréchet distance in a segmenter's feature space that needs no download, and diversity; from Python, during training, and for a saved model.
- `gaugan_fastai.nvlabs`: Loading runs of the SPADE reference implementation (NVlabs/SPADE) exactly: their options, the data-set presets, what the weights say, strict loading with one-line errors, the reference's semantic input, class names and colours of COCO-Stuff, ADE20K and Cityscapes, and conversion into our synthesizer file.
- `gaugan_fastai.pix2pix`: The model SPADE set out to beat: a U-Net generator that takes the one-hot label map as its input image, and an L1 reconstruction term, trained against SPADE's own critic so that the two can be compared side by side."""

__version__ = "0.0.1"
