"""``lib``: the code of the executable textbook on training deep networks.

Core modules, shared by every chapter:
  - ``lib.checks``: argument checks with messages that name the argument
  - ``lib.reproducible``: ``pin_cpu_numerics``, the same float rounding on every x86-64 CPU
  - ``lib.device``: ``set_seed``, ``get_device``
  - ``lib.data``: MNIST-1D generated locally, splits, ``Standardizer``, batches
  - ``lib.train``: the torch training loop and its ``History``; ``train_seeds`` trains several
    seeds at once as one batched model (one schedule per seed if asked), and ``mean_spread``
    reports them; schedules, per-update logs, ``EarlyStopping`` and atomic ``save_checkpoint``
  - ``lib.plots``: learning curves, per-layer histograms, percentile bands
  - ``lib.quiz``: quizzes kept as data, shown with jupyterquiz
  - ``lib.gradcheck``: the numeric gradient checker (arrays, layers, models with dict parameters)
  - ``lib.layers``: NumPy layers (affine, ReLU, tanh, sigmoid, dropout in its inverted and original
    forms, softmax, softmax cross-entropy) and an MLP
  - ``lib.notebook``: ``show_source`` for showing lib code in a lesson

Chapter modules (NumPy reference and torch path side by side):
  - ``lib.normalization``
  - ``lib.initialization``
  - ``lib.regularization``: weight decay (L2 and decoupled, SGD and Adam), Monte-Carlo dropout,
    DropConnect, stochastic depth, fractional max pooling
  - ``lib.schedules``: learning-rate schedules (lib = torch), the range test, a loss-spike guard
"""

__version__ = "0.1.0"
