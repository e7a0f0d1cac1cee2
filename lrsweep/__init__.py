"""lrsweep: Optuna studies of learning-rate schedules for the D2L LeNet on Fashion-MNIST."""

__version__ = "0.1.0"
