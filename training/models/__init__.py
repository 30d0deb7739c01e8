"""The networks and the training step: everything that defines what CycleGAN computes.

  registry.py        netG / netD name -> network, size multiple, minimum side, the authors'
                     .pth key layout (``define_G`` / ``define_D``); add architectures here
  resnet.py          the ResNet generator (the paper's)
  unet.py            the U-Net generators (unet_128, unet_256)
  discriminators.py  the PatchGAN and the 1x1 PixelGAN
  layers.py          normalisation, initialisation, parameter and MAC counts
  padding.py         reflection padding with a deterministic backward (train.deterministic)
  losses.py          LSGAN / vanilla / WGAN-GP, cycle and identity losses
  pool.py            the history pool of generated images
  cyclegan.py        the four networks, the optimisers and one training iteration (TrainingStep)
"""
