import os
import sys

# `python -m recipes` puts the current folder first on the import path; a `recipes/` folder there (of
# recipe files, as the README keeps them) then shadows this package as a namespace package. Run as a
# script (torchrun's re-launch, recipes.training.distributed.launch), this package's own folder is
# first instead. Neither belongs on the path: drop them and import the real package.
_here = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or os.curdir) in (_here, os.getcwd()):
    if getattr(sys.modules.get("recipes"), "__file__", None) is None or sys.path[0] and \
            os.path.abspath(sys.path[0]) == _here:
        sys.path.pop(0)
        for _name in [m for m in sys.modules if m == "recipes" or m.startswith("recipes.")]:
            if _name != "recipes.__main__":
                del sys.modules[_name]

from recipes.cli import main  # noqa: E402

main()
