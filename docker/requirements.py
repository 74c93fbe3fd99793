"""Print the project's pinned dependencies (and those of the extras named on the command line)
from pyproject.toml, one per line: the image installs them in a layer that emoflow's own source
does not invalidate. ``--no-deps`` prints instead the pins installed without their declared
dependencies (``[tool.emoflow] no-deps``)."""

import sys
import tomllib
from pathlib import Path

pyproject = tomllib.loads(Path("pyproject.toml").read_text())
if sys.argv[1:] == ["--no-deps"]:
    print("\n".join(pyproject["tool"]["emoflow"]["no-deps"]))
    sys.exit()
project = pyproject["project"]
print("\n".join(project["dependencies"]))
for extra in sys.argv[1:]:
    print("\n".join(project["optional-dependencies"][extra]))
