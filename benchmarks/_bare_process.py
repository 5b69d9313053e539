"""The bare PyTorch + smp loop as a whole process: ``python _bare_process.py ROOT PATCH EPOCHS PATCHES OUT``.

What ``end_to_end.py`` times against a whole ``edgesearch train`` process: imports, reading the
whole images, training on PATCHES random patches of side PATCH an epoch, validating the whole
images by sliding window every epoch, saving the best weights.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bare

if __name__ == "__main__":
    root, patch, epochs, patches, out = Path(sys.argv[1]), *map(int, sys.argv[2:5]), Path(sys.argv[5])
    result = _bare.bare_train_patches(
        root, epochs=epochs, seed=0, patch=patch, patches_per_epoch=patches, save_to=out / "best.pt"
    )
    print(f"best val IoU {result.best_val_iou:.4f}")
