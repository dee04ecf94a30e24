import os
import sys

# Run as a script (torchrun's re-launch, recipes.training.distributed.launch): the script's own
# folder, this package, must not be on the import path (its modules would shadow top-level ones).
if sys.path and sys.path[0] and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

from recipes.cli import main  # noqa: E402

main()
