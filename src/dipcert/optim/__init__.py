"""Training the DIP: one loop (:func:`train`) shared by every method."""
from .gradient_descent import GradientDescent
from .loop import History, TrainResult, train

__all__ = ["GradientDescent", "History", "TrainResult", "train"]
