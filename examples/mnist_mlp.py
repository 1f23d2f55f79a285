"""Train the seed projects' MLPs on MNIST with ember, the way you would in PyTorch.

    python examples/mnist_mlp.py                       # sigmoid model on the packaged sample
    python examples/mnist_mlp.py --data ../shared/datasets/mnist --model relu --epochs 20

Models (the recipes the seed projects used):
  sigmoid  784-100-10, Sigmoid hidden layer, MSE on one-hot targets, SGD lr 0.1, batch 10
  relu     784-256-128-64-32-10 ReLU, cross-entropy, SGD + momentum, cosine schedule, batch 64
  adam     784-100-10 ReLU, cross-entropy, Adam lr 1e-3, cosine schedule, batch 32
"""

import argparse
import time

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.data import DataLoader
from ember.data.datasets import MNIST
from ember.data.transforms import Compose, Normalize, ToTensor

# ---- config (each can be overridden on the command line)
RECIPES = {
    "sigmoid": dict(epochs=150, batch_size=10, lr=0.1),
    "relu": dict(epochs=20, batch_size=64, lr=0.05, momentum=0.9),
    "adam": dict(epochs=5, batch_size=32, lr=1e-3),
}


def build_model(name: str) -> nn.Module:
    if name == "sigmoid":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.Sigmoid(), nn.Linear(100, 10))
    if name == "relu":
        sizes = [784, 256, 128, 64, 32]
        layers = [nn.Flatten()]
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(32, 10))
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10))


def build_optimizer(name: str, model: nn.Module, cfg: dict) -> ember.optim.Optimizer:
    if name == "adam":
        return ember.optim.Adam(model.parameters(), lr=cfg["lr"])
    return ember.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg.get("momentum", 0.0))


def loss_fn(name: str, logits: ember.Tensor, labels: ember.Tensor) -> ember.Tensor:
    if name == "sigmoid":  # the seed recipe: squared error against one-hot targets
        return F.mse_loss(logits, F.one_hot(labels, 10).float())
    return F.cross_entropy(logits, labels)


@ember.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    for images, labels in loader:
        correct += int((model(images).argmax(1) == labels).sum().item())
        total += len(labels)
    model.train()
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(RECIPES), default="sigmoid")
    parser.add_argument("--data", default=None,
                        help="folder with the four MNIST .gz files (default: packaged sample)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=None,
                        help="stop once test accuracy reaches this (e.g. 0.973)")
    args = parser.parse_args()
    cfg = dict(RECIPES[args.model])
    cfg.update({k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                  ("lr", args.lr)) if v is not None})

    ember.manual_seed(args.seed)
    transform = Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])
    sample = args.data is None
    train_set = MNIST(args.data, train=True, transform=transform, sample=sample)
    test_set = MNIST(args.data, train=False, transform=transform, sample=sample)
    train_loader = DataLoader(train_set, batch_size=cfg["batch_size"], shuffle=True)
    test_loader = DataLoader(test_set, batch_size=1000)

    model = build_model(args.model)
    optimizer = build_optimizer(args.model, model, cfg)
    scheduler = None
    if args.model in ("relu", "adam"):
        scheduler = ember.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["epochs"])
    print(f"{args.model}: {len(train_set)} train / {len(test_set)} test images, {cfg}")

    # ---- the training loop
    for epoch in range(1, cfg["epochs"] + 1):
        start, running = time.perf_counter(), 0.0
        for images, labels in train_loader:
            loss = loss_fn(args.model, model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.item()
        if scheduler is not None:
            scheduler.step()
        seconds = time.perf_counter() - start
        accuracy = evaluate(model, test_loader)
        print(f"epoch {epoch:3d}  loss {running / len(train_loader):.4f}  "
              f"test accuracy {accuracy:.2%}  {seconds:.1f} s/epoch", flush=True)
        if args.target is not None and accuracy >= args.target:
            print(f"reached {args.target:.2%} after {epoch} epochs")
            break


if __name__ == "__main__":
    main()
