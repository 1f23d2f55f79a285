"""A small VGG-style CNN with BatchNorm and augmentation on CIFAR-10, on the CPU.

    python examples/cifar10_cnn.py --data ../shared/datasets/cifar-10

Three stages of two 3x3 conv + BatchNorm + ReLU (width, 2x, 4x channels), max-pooling,
global average pooling; random crops and flips; SGD with Nesterov momentum and a
one-cycle learning rate.
"""

import argparse
import os
import time

import ember
import ember.nn.functional as F
from ember.data import DataLoader
from ember.data.datasets import CIFAR10
from ember.data.transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip, ToTensor
from ember.models import cifar_cnn

# ---- config
EPOCHS, BATCH_SIZE, MAX_LR, WIDTH, WEIGHT_DECAY, SEED = 18, 128, 0.1, 24, 5e-4, 0
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@ember.no_grad()
def evaluate(model, loader) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum().item()) for x, y in loader)
    model.train()
    return correct / len(loader.dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="folder holding cifar-10-batches-bin/")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images")
    parser.add_argument("--out", default="runs/cifar10_cnn", help="where the weights go")
    args = parser.parse_args()

    wall_start = time.perf_counter()  # "min in all" counts loading, training and testing
    ember.manual_seed(SEED)
    train_tf = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(),
                        Normalize(MEAN, STD)])
    test_tf = Compose([ToTensor(), Normalize(MEAN, STD)])
    train_set = CIFAR10(args.data, train=True, transform=train_tf)
    if args.limit:
        train_set = ember.data.Subset(train_set, range(args.limit))
    test_set = CIFAR10(args.data, train=False, transform=test_tf)
    train_loader = DataLoader(train_set, batch_size=BATCH_SIZE, shuffle=True, drop_last=True)
    test_loader = DataLoader(test_set, batch_size=500)

    model = cifar_cnn(width=args.width)
    optimizer = ember.optim.SGD(model.parameters(), lr=MAX_LR, momentum=0.9, nesterov=True,
                                weight_decay=WEIGHT_DECAY)
    scheduler = ember.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=MAX_LR, epochs=args.epochs, steps_per_epoch=len(train_loader))
    print(model)

    # ---- the training loop (the schedule steps every batch)
    for epoch in range(1, args.epochs + 1):
        start, running = time.perf_counter(), 0.0
        for images, labels in train_loader:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item()
        seconds = time.perf_counter() - start
        accuracy = evaluate(model, test_loader)
        minutes = (time.perf_counter() - wall_start) / 60
        print(f"epoch {epoch:2d}  loss {running / len(train_loader):.4f}  test accuracy "
              f"{accuracy:.2%}  {seconds:.0f} s/epoch  {minutes:.1f} min in all", flush=True)
    os.makedirs(args.out, exist_ok=True)
    ember.save(model.state_dict(), os.path.join(args.out, "cifar10_cnn.safetensors"))


if __name__ == "__main__":
    main()
