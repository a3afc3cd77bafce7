"""Prints the installed requirements: the image was built with them from the proxy."""

from importlib.metadata import distributions
from pathlib import Path

wanted = {line.strip().lower() for line in Path("requirements.txt").read_text().splitlines()}
for dist in sorted(distributions(), key=lambda d: d.metadata["Name"].lower()):
    if dist.metadata["Name"].lower() in wanted:
        print(f"{dist.metadata['Name']} {dist.version} installed through cacheproxy")
