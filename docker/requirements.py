"""Print the project's pinned dependencies (and those of the extras named on the command line)
from pyproject.toml, one per line: the image installs them in a layer that emoflow's own source
does not invalidate."""

import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
print("\n".join(project["dependencies"]))
for extra in sys.argv[1:]:
    print("\n".join(project["optional-dependencies"][extra]))
