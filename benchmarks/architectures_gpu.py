"""Time the CNN-architectures chapter's full-size models on a GPU: forward, and forward + backward.

    python benchmarks/architectures_gpu.py                       # batch 64, 224 × 224, float32 (TF32 convolutions)
    python benchmarks/architectures_gpu.py --no-tf32             # convolutions in full float32
    python benchmarks/architectures_gpu.py --channels-last --amp # NHWC memory layout, bfloat16 autocast
    python benchmarks/architectures_gpu.py --models mobilenet_v1 resnet50

The models are lib.architectures' ResNet-18/50, ResNeXt-50 (32×4d), MobileNet v1, MobileNetV2 and
ShuffleNet V2 1×, and torchvision's VGG-16. Each is timed after warm-up passes, with
torch.cuda.synchronize() around every timed pass, and the median of the repeats is printed: ms per
batch, images per second, and the multiply-adds per second achieved (T MAC/s). Multiply-adds come
from lib.architectures.model_costs (conv and fc layers, counted from shapes); a training step is
counted as 3 times the forward pass (the backward pass computes the gradients of both the inputs
and the weights, each about one forward pass of work). The G MAC column is per image.

Float32 convolutions run in TF32 on the tensor cores by default (torch's default for cuDNN,
``torch.backends.cudnn.allow_tf32 = True``: a 10-bit mantissa for the products, float32 sums), so
the default table's T MAC/s can exceed a GPU's plain float32 peak; ``--no-tf32`` turns it off.
Matrix products (the fc layers) keep torch's default, no TF32. The header prints both settings.

The chapter's notebook 05 shows on a CPU that multiply-adds are not time; this table shows it for
whole networks on a GPU: compare the T MAC/s of MobileNet and ShuffleNet with ResNet's and VGG's.

Without a GPU the script says so and runs a smoke test on the CPU instead (batch 1, 64 × 64, one
repeat), so that it can be checked anywhere; those numbers mean nothing about speed.
"""
import argparse
import statistics
import time

import torch
import torchvision

from lib.architectures import MobileNetV1, MobileNetV2, ShuffleNetV2, model_costs, resnet, resnext

MODELS = {
    "resnet18": lambda: resnet(18),
    "resnet50": lambda: resnet(50),
    "resnext50_32x4d": lambda: resnext(50, groups=32, width_per_group=4),
    "vgg16": torchvision.models.vgg16,
    "mobilenet_v1": MobileNetV1,
    "mobilenet_v2": MobileNetV2,
    "shufflenet_v2_x1_0": lambda: ShuffleNetV2(1.0),
}


def median_seconds(step, device: torch.device, warmup: int, repeats: int) -> float:
    """The median time of ``repeats`` calls of ``step()``, after ``warmup`` untimed calls (cuDNN picks
    its algorithms and the allocator fills its cache during those)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the GPU runs asynchronously: wait before and after
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def steps(model, x, amp: bool):
    """The two timed steps: a forward pass without autograd, and a forward + backward pass."""
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp)

    def forward():
        with torch.no_grad(), autocast:
            model(x)

    def forward_backward():
        with autocast:
            loss = model(x).float().logsumexp(dim=1).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    return forward, forward_backward


def benchmark(name: str, args, device: torch.device) -> str:
    with torch.device("meta"):
        costs = model_costs(MODELS[name](), (1, 3, args.size, args.size))
    model = MODELS[name]().to(device).train()  # train mode: batch norm as in training
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).to(memory_format=memory_format)
    cells = []
    for step, work in zip(steps(model, x, args.amp), (1, 3)):
        seconds = median_seconds(step, device, args.warmup, args.repeats)
        cells.append(f"{1e3 * seconds:>9.1f} {args.batch / seconds:>9.0f} "
                     f"{work * costs.macs * args.batch / seconds / 1e12:>8.2f}")
    return f"{name:<20} {costs.macs / 1e9:>6.2f} {costs.params / 1e6:>7.1f}  " + "  ".join(cells)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory layout")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--no-tf32", dest="tf32", action="store_false",
                        help="float32 convolutions without TF32 (torch's default for cuDNN is TF32)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args()

    torch.backends.cudnn.allow_tf32 = args.tf32  # set, not assumed: it decides what "float32" means
    if torch.cuda.is_available():
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True  # let cuDNN time its algorithms during the warm-up
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    else:
        device = torch.device("cpu")
        args.batch, args.size, args.warmup, args.repeats = 1, 64, 1, 1
        print("No GPU: a smoke test on the CPU (batch 1, 64 × 64, one repeat); the times say nothing "
              "about speed.")
    print(f"batch {args.batch}, {args.size} × {args.size}, channels_last {args.channels_last}, "
          f"bfloat16 autocast {args.amp}, TF32 convolutions {torch.backends.cudnn.allow_tf32}, "
          f"TF32 matmul {torch.backends.cuda.matmul.allow_tf32}; median of {args.repeats} after "
          f"{args.warmup} warm-up passes\n")
    header = (f"{'model':<20} {'G MAC':>6} {'params':>7}  {'fwd ms':>9} {'img/s':>9} {'T MAC/s':>8}  "
              f"{'fwd+bwd ms':>9} {'img/s':>9} {'T MAC/s':>8}")
    print(header + "\n" + "-" * len(header))
    for name in args.models:
        print(benchmark(name, args, device), flush=True)


if __name__ == "__main__":
    main()
