"""LeNet-5 on MNIST with ember: conv, pool, ReLU, Adam, the PyTorch way.

    python examples/lenet5.py                                   # packaged 10k sample
    python examples/lenet5.py --data ../shared/datasets/mnist   # the full dataset
"""

import argparse
import time

import ember
import ember.nn.functional as F
from ember.data import DataLoader
from ember.data.datasets import MNIST
from ember.data.transforms import Compose, Normalize, ToTensor
from ember.models import lenet5

# ---- config
EPOCHS, BATCH_SIZE, LR, SEED = 8, 64, 2e-3, 0


@ember.no_grad()
def evaluate(model, loader) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum().item()) for x, y in loader)
    model.train()
    return correct / len(loader.dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="folder with the MNIST .gz files")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--target", type=float, default=None, help="stop at this accuracy")
    args = parser.parse_args()

    ember.manual_seed(SEED)
    transform = Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])
    sample = args.data is None
    train_set = MNIST(args.data, train=True, transform=transform, sample=sample)
    test_set = MNIST(args.data, train=False, transform=transform, sample=sample)
    train_loader = DataLoader(train_set, batch_size=BATCH_SIZE, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=1000)

    model = lenet5()
    optimizer = ember.optim.Adam(model.parameters(), lr=LR)
    scheduler = ember.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    print(model)

    # ---- the training loop
    total = 0.0
    for epoch in range(1, args.epochs + 1):
        start, running = time.perf_counter(), 0.0
        for images, labels in train_loader:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.item()
        scheduler.step()
        seconds = time.perf_counter() - start
        total += seconds
        accuracy = evaluate(model, test_loader)
        print(f"epoch {epoch:2d}  loss {running / len(train_loader):.4f}  "
              f"test accuracy {accuracy:.2%}  {seconds:.1f} s/epoch", flush=True)
        if args.target is not None and accuracy >= args.target:
            break
    print(f"trained {epoch} epochs in {total:.0f} s")


if __name__ == "__main__":
    main()
