"""The bare PyTorch + smp loop as a whole process: ``python _bare_process.py ROOT SIZE EPOCHS OUT``.

What ``end_to_end.py`` times against a whole ``edgesearch train`` process: imports, reading the
tiles, training, validating every epoch, saving the best weights.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bare

if __name__ == "__main__":
    root, size, epochs, out = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    result = _bare.bare_train(root, epochs=epochs, seed=0, size=size, save_to=out / "best.pt")
    print(f"best val IoU {result.best_val_iou:.4f}")
