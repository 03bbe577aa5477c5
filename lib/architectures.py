"""CNN architectures: a NumPy reference for convolution and the residual block, counters of
parameters, multiply-adds and activation memory, and the torch models of the chapter (ResNet,
ResNeXt, MobileNet v1 and v2, ShuffleNet V2), each built at ImageNet size to match its reference
definition and small (8×8 digits) from the same code; the degradation experiment; an architecture
search in miniature.

Shapes follow torch: images are ``(N, C, H, W)``, convolution weights ``(C_out, C_in / groups, K, K)``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lib.checks import check_array, check_choice, check_int, check_positive

# ---------------------------------------------------------------------------------------------
# NumPy reference: convolution, the residual block
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Cost counters: parameters, multiply-adds, activation memory
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# ResNet and ResNeXt
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Efficient networks: MobileNet v1, MobileNetV2, ShuffleNet V2, channel shuffle, timing
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Plain and residual stacks: the degradation experiment
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Architecture search in miniature
# ---------------------------------------------------------------------------------------------
