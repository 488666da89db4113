"""Training the DIP: one loop (:func:`train`) shared by every method.

Methods: gradient descent (2); the reference momentum methods (heavy ball, Nesterov) and Adam;
the discrete inertial schemes C1 (:class:`GradientDifference`) and C2 (:class:`INNA`); and the
ODEs, gradient flow and the inertial DIN system, integrated by SciPy's adaptive solvers.
"""
from .adam import Adam
from .flows import GradientFlow, InertialFlow
from .gradient_descent import GradientDescent
from .inertial import INNA, GradientDifference
from .loop import History, Method, MethodFailure, TrainResult, train
from .momentum import HeavyBall, Nesterov

__all__ = ["Adam", "GradientDescent", "GradientDifference", "GradientFlow", "HeavyBall", "History", "INNA",
           "InertialFlow", "Method", "MethodFailure", "Nesterov", "TrainResult", "train"]
