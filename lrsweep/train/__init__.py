"""Training: Fashion-MNIST and image folders as resident tensors, LeNet and its packs,
ResNet-18, SGLD, the pack's epoch loop and evaluation, per-epoch checkpoints. Everything
torch, blind to Optuna: it takes trial configurations and returns per-epoch metrics."""
